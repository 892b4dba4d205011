//! The `causeway` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

// jemalloc, configured in `.cargo/config.toml` to hand freed memory back to the system within
// a second, keeps the resident size of a long-running server close to what it actually uses
// (password hashing alone allocates 19 MiB at a time).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "causeway",
    version,
    about = "A Matrix homeserver and XMPP server, and the gateway between them"
)]
struct Cli {
    /// The configuration file (TOML). Without it, the defaults of `causeway config example`.
    #[arg(long, short, global = true, env = "CAUSEWAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Administer accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the fully commented example configuration (all defaults).
    Example,
    /// Check a configuration file and print what it resolves to.
    Check,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account.
    Add {
        /// The user name (localpart), e.g. `alice`.
        name: String,
        /// The password; prompted for when not given.
        #[arg(long, env = "CAUSEWAY_PASSWORD")]
        password: Option<String>,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Set a new password (and log out every device of the account).
    ResetPassword {
        name: String,
        #[arg(long, env = "CAUSEWAY_PASSWORD")]
        password: Option<String>,
    },
    /// Deactivate an account: it leaves its rooms and cannot log in again.
    Deactivate {
        name: String,
        /// Erase it too: its profile, avatar, media, account data, presence, receipts and
        /// keys, and the content of its events for whoever joins later.
        #[arg(long)]
        erase: bool,
    },
    /// Erase an XMPP user's ghost by their address: its profile, avatar, the messages still
    /// queued for them; they are bridged no more.
    EraseXmppUser {
        /// The XMPP address, e.g. `bob@example.net`.
        jid: String,
    },
    /// List the accounts.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config {
        command: ConfigCommand::Example,
    } = cli.command
    {
        print!("{}", causeway_config::EXAMPLE);
        return ExitCode::SUCCESS;
    }
    let config = match &cli.config {
        Some(path) => match causeway_config::load(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        },
        None => causeway_config::Config::default(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => causeway::serve(config).await,
            Command::Config {
                command: ConfigCommand::Check,
            } => {
                println!("{config:#?}");
                Ok(())
            }
            Command::Config { .. } => Ok(()),
            Command::User { command } => user_command(config, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_password(given: Option<String>) -> anyhow::Result<String> {
    if let Some(password) = given {
        return Ok(password);
    }
    let first = rpassword::prompt_password("Password: ").context("reading the password")?;
    let second = rpassword::prompt_password("Again: ").context("reading the password")?;
    anyhow::ensure!(first == second, "the passwords differ");
    anyhow::ensure!(!first.is_empty(), "the password must not be empty");
    Ok(first)
}

async fn user_command(config: causeway_config::Config, command: UserCommand) -> anyhow::Result<()> {
    let admin = causeway::admin::Admin::open(config).await?;
    match command {
        UserCommand::Add {
            name,
            password,
            admin: is_admin,
        } => {
            let password = read_password(password)?;
            let user_id = admin.add_user(&name, &password, is_admin).await?;
            println!("created {user_id}");
        }
        UserCommand::ResetPassword { name, password } => {
            let password = read_password(password)?;
            let user_id = admin.reset_password(&name, &password).await?;
            println!("new password set for {user_id}; its devices were logged out");
        }
        UserCommand::Deactivate { name, erase } => {
            let user_id = admin.deactivate(&name, erase).await?;
            if erase {
                println!("deactivated and erased {user_id}");
            } else {
                println!("deactivated {user_id}");
            }
        }
        UserCommand::EraseXmppUser { jid } => {
            let ghost = admin.erase_xmpp_user(&jid).await?;
            println!("erased {jid} ({ghost})");
        }
        UserCommand::List => {
            for user in admin.list().await? {
                let mut flags = Vec::new();
                if user.admin {
                    flags.push("admin");
                }
                if user.deactivated {
                    flags.push("deactivated");
                }
                if user.erased {
                    flags.push("erased");
                }
                println!("{}\t{}", user.user_id, flags.join(","));
            }
        }
    }
    Ok(())
}
