//! The `causeway` command line: configuration helpers and account administration.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn causeway(config: Option<&std::path::Path>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_causeway"));
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command
        .env_remove("CAUSEWAY_CONFIG")
        .env_remove("CAUSEWAY_PASSWORD");
    command.args(args).output().expect("running causeway")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn config_example_is_the_documented_default() {
    let output = causeway(None, &["config", "example"]);
    assert!(output.status.success());
    assert_eq!(text(&output.stdout), causeway_config::EXAMPLE);
}

#[test]
fn a_broken_configuration_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("causeway.toml");
    std::fs::write(&path, "[client_api]\nbind = \"not an address\"\n").unwrap();
    let output = causeway(Some(&path), &["serve"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("`client_api.bind`"), "{stderr}");
    assert!(stderr.contains("causeway.toml"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    std::fs::write(&path, "[server]\nname = \"example.org\"\nunknown = 1\n").unwrap();
    let stderr = text(&causeway(Some(&path), &["config", "check"]).stderr);
    assert!(stderr.contains("`server.unknown`"), "{stderr}");
}

#[test]
fn user_administration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("causeway.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nname = \"admin.test\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let added = causeway(Some(&path), &["user", "add", "Alice", "--password", "pw1"]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert!(text(&added.stdout).contains("@alice:admin.test"));
    let again = causeway(Some(&path), &["user", "add", "alice", "--password", "pw"]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already exists"));
    let reserved = causeway(Some(&path), &["user", "add", "_xmpp_x", "--password", "pw"]);
    assert!(!reserved.status.success());
    causeway(
        Some(&path),
        &["user", "add", "root", "--password", "pw", "--admin"],
    );
    let reset = causeway(
        Some(&path),
        &[
            "user",
            "reset-password",
            "@alice:admin.test",
            "--password",
            "pw2",
        ],
    );
    assert!(reset.status.success(), "{}", text(&reset.stderr));
    let missing = causeway(
        Some(&path),
        &["user", "reset-password", "nobody", "--password", "x"],
    );
    assert!(!missing.status.success());
    let deactivated = causeway(Some(&path), &["user", "deactivate", "alice"]);
    assert!(
        deactivated.status.success(),
        "{}",
        text(&deactivated.stderr)
    );
    let list = text(&causeway(Some(&path), &["user", "list"]).stdout);
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        vec!["@alice:admin.test\tdeactivated", "@root:admin.test\tadmin"]
    );
}

/// A second `causeway serve` on the database another one serves refuses to start, saying why,
/// before it writes anything; once the first stops, a new one starts.
#[test]
fn one_server_per_database() {
    let dir = tempfile::tempdir().unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let write_config = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[server]\nname = \"one.test\"\ndata_dir = {:?}\n[client_api]\nbind = \"{}\"\n\
                 [federation]\nenabled = false\n[xmpp]\nenabled = false\n",
                dir.path().join("data"),
                free()
            ),
        )
        .unwrap();
        path
    };
    let first_config = write_config("first.toml");
    let mut first = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .arg("serve")
        .arg("--config")
        .arg(&first_config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The first server is up once its lock file is there and its listener answers.
    let bind = std::fs::read_to_string(&first_config).unwrap();
    let address = bind
        .split("bind = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = causeway(Some(&write_config("second.toml")), &["serve"]);
    let message = text(&second.stderr);
    assert!(!second.status.success(), "{message}");
    assert!(
        message.contains("another Causeway process is serving this database")
            && message.contains("only one process may write it"),
        "{message}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // With the first gone, the lock is free again.
    let mut third = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .arg("serve")
        .arg("--config")
        .arg(write_config("third.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        third.try_wait().unwrap().is_none(),
        "the server after the first did not start"
    );
    third.kill().unwrap();
    third.wait().unwrap();
}

/// While a server runs, `causeway user …` goes through its admin API (the database is the
/// server's); once it stopped, the command works on the database itself.
#[test]
fn administration_goes_through_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let path = dir.path().join("causeway.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nname = \"run.test\"\ndata_dir = {:?}\n[client_api]\nbind = \"{address}\"\n\
             [federation]\nenabled = false\n[xmpp]\nenabled = false\n",
            dir.path().join("data"),
        ),
    )
    .unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let secret = dir.path().join("data").join("admin.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the administration secret is private");
    }
    let added = causeway(Some(&path), &["user", "add", "bob", "--password", "pw"]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    // The running server knows him at once: he logs in there.
    let login = post(
        address,
        "/_matrix/client/v3/login",
        r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"bob"},"password":"pw"}"#,
    );
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    let again = causeway(Some(&path), &["user", "add", "bob", "--password", "pw"]);
    assert!(text(&again.stderr).contains("already exists"));
    let erased = causeway(Some(&path), &["user", "deactivate", "bob", "--erase"]);
    assert!(erased.status.success(), "{}", text(&erased.stderr));
    let login = post(
        address,
        "/_matrix/client/v3/login",
        r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"bob"},"password":"pw"}"#,
    );
    assert!(login.starts_with("HTTP/1.1 403"), "{login}");
    let listed = text(&causeway(Some(&path), &["user", "list"]).stdout);
    assert_eq!(listed.trim(), "@bob:run.test\tdeactivated,erased");
    // A clean stop removes the secret; then the commands use the database.
    let stopped = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(server.wait().unwrap().success());
    assert!(!secret.exists());
    let listed = text(&causeway(Some(&path), &["user", "list"]).stdout);
    assert_eq!(listed.trim(), "@bob:run.test\tdeactivated,erased");
}

/// A plain HTTP/1.1 POST with a JSON body; the whole response as text.
fn post(address: std::net::SocketAddr, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
