//! The same server-to-server load against Causeway and against Prosody, in one run.
//!
//! Both servers run as processes of their own on loopback addresses: Causeway (the release
//! binary, `CAUSEWAY_BIN`) as gw.test on 127.0.0.5, Prosody (the Debian package) as prosody.test
//! on 127.0.0.2. The load comes from this process, a server remote.test on 127.0.0.7, trusted by
//! both through a bench CA (SASL EXTERNAL everywhere). For each server it measures:
//!
//! - pings answered per second: `S2S_BENCH_PINGS` XEP-0199 pings sent at once over one stream;
//!   the server answers each over its own stream back to remote.test;
//! - stream set-ups per second: TCP, STARTTLS, SASL EXTERNAL and the stream restarts,
//!   `S2S_BENCH_SETUPS` times one after the other;
//! - memory per open stream: the server's resident memory before and after
//!   `S2S_BENCH_STREAMS` authenticated streams are opened to it.
//!
//! Prosody runs with `network_settings = { nagle = false }`: with its default (Nagle on), each
//! set-up waits on delayed acknowledgements and it manages about 20 set-ups per second.
//!
//! Run: `scripts/bench-xmpp` (builds the release binary and runs this with `CAUSEWAY_BIN`).

mod common;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_xmpp::dialback::Secret;
use causeway_xmpp::negotiation::{self, BoxedIo, OutboundPolicy};
use causeway_xmpp::server::{Endpoint, S2s};
use causeway_xmpp::stanza::Stanza;
use causeway_xmpp::stream::Limits;
use causeway_xmpp::testing::TestCa;
use causeway_xmpp::tls::TlsSettings;
use common::{Counter, config, rss_kb, size};

const GENERATOR: &str = "127.0.0.7:5269";
const CAUSEWAY: &str = "127.0.0.5:5269";
const PROSODY: &str = "127.0.0.2:5269";

/// A server under test; stopped when dropped.
struct Target {
    name: &'static str,
    domain: &'static str,
    address: SocketAddr,
    child: Child,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Writes `<name>.crt` and `<name>.key` for `domains`, and the CA as `ca.crt`, into `dir`.
fn write_certificates(dir: &Path, ca: &TestCa, domains: &[&str], name: &str) {
    let leaf = ca.leaf(domains);
    write(&dir.join(format!("{name}.crt")), &leaf.cert_pem);
    write(&dir.join(format!("{name}.key")), &leaf.key_pem);
    write(&dir.join("ca.crt"), &ca.root_pem());
}

async fn wait_listening(address: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not start listening on {address}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

async fn start_causeway(binary: &str, dir: &Path, ca: &TestCa) -> Target {
    write_certificates(dir, ca, &["gw.test", "muc.gw.test"], "gw");
    let config = format!(
        r#"[server]
name = "gw.test"
data_dir = "{dir}/causeway-data"

[client_api]
bind = "127.0.0.1:{port}"

[federation]
enabled = false

[logging]
filter = "warn"

[xmpp]
listen_starttls = ["{CAUSEWAY}"]
listen_direct_tls = []
tls_certificate = "{dir}/gw.crt"
tls_private_key = "{dir}/gw.key"
ca_files = ["{dir}/ca.crt"]
system_roots = false
dialback = false
max_stanzas_per_second = 1000000
# The streams of the memory figure all come from one address.
max_inbound_streams_per_address = 100000
max_inbound_streams = 100000

[[xmpp.routes]]
domain = "remote.test"
address = "{GENERATOR}"
"#,
        dir = dir.display(),
        port = free_port(),
    );
    write(&dir.join("causeway.toml"), &config);
    let config = dir.join("causeway.toml");
    let args = [
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("serve"),
    ];
    let target = ("Causeway", "gw.test", CAUSEWAY);
    spawn(binary, &args, &dir.join("causeway.log"), target).await
}

/// Starts a server and waits until it listens at `address`.
async fn spawn(
    program: &str,
    args: &[&OsStr],
    log: &Path,
    (name, domain, address): (&'static str, &'static str, &str),
) -> Target {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(program)
        .args(args)
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    let address = address.parse().expect("address");
    wait_listening(address, name).await;
    Target {
        name,
        domain,
        address,
        child,
    }
}

async fn start_prosody(dir: &Path, ca: &TestCa) -> Target {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    write_certificates(&certs, ca, &["prosody.test"], "prosody.test");
    write(&dir.join("ca.crt"), &ca.root_pem());
    write(
        &dir.join("hosts.test"),
        "127.0.0.1 localhost\n127.0.0.2 prosody.test\n127.0.0.7 remote.test\n",
    );
    let dir_text = dir.display();
    let config = format!(
        r#"run_as_root = true
pidfile = "{dir_text}/prosody.pid"
data_path = "{dir_text}/data"
log = {{ warn = "{dir_text}/prosody.log" }}
network_settings = {{ nagle = false }}
interfaces = {{ "127.0.0.2" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ 5269 }}
s2s_direct_tls_ports = {{ }}
s2s_require_encryption = true
s2s_secure_auth = true
certificates = "{dir_text}/certs"
ssl = {{ cafile = "{dir_text}/ca.crt" }}
unbound = {{ hoststxt = "{dir_text}/hosts.test" }}
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "presence"; "message"; "iq";
    "s2s_auth_certs";
}}
modules_disabled = {{ "offline" }}
VirtualHost "prosody.test"
"#,
        c2s = free_port(),
    );
    write(&dir.join("prosody.cfg.lua"), &config);
    let config = dir.join("prosody.cfg.lua");
    let args = [OsStr::new("--config"), config.as_os_str(), OsStr::new("-F")];
    let target = ("Prosody", "prosody.test", PROSODY);
    spawn("prosody", &args, &dir.join("prosody.stdout"), target).await
}

/// The figures of one server.
struct Figures {
    pings_per_second: f64,
    setups_per_second: f64,
    kib_per_stream: f64,
}

fn ping(i: u64, to: &str) -> Stanza {
    let element: minidom::Element = format!(
        "<iq xmlns='jabber:server' type='get' id='p{i}' from='bench@remote.test/load' \
         to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    .parse()
    .expect("stanza");
    causeway_xmpp::stanza::accept_inbound(element, |_| true, |_| true).expect("valid")
}

async fn measure(
    target: &Target,
    generator: &Arc<S2s>,
    answers: &Counter,
    policy: &OutboundPolicy<'_>,
) -> Figures {
    generator.set_route(
        target.domain,
        vec![Endpoint {
            address: target.address,
            direct_tls: false,
        }],
    );
    // One ping sets up both streams first.
    let before = answers.count();
    generator.send(ping(0, target.domain));
    let deadline = Instant::now() + Duration::from_secs(30);
    while answers.count() == before {
        assert!(
            Instant::now() < deadline,
            "{} does not answer pings",
            target.name
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let pings = size("S2S_BENCH_PINGS", 20_000) as u64;
    let before = answers.count();
    let start = Instant::now();
    for i in 1..=pings {
        generator.send(ping(i, target.domain));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while answers.count() < before + pings {
        assert!(
            Instant::now() < deadline,
            "{} answered {} of {pings} pings",
            target.name,
            answers.count() - before
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let pings_per_second = pings as f64 / start.elapsed().as_secs_f64();

    let setups = size("S2S_BENCH_SETUPS", 200);
    let start = Instant::now();
    for _ in 0..setups {
        let mut stream = connect(target, policy).await;
        let _ = stream.stream.close().await;
    }
    let setups_per_second = setups as f64 / start.elapsed().as_secs_f64();

    let streams = size("S2S_BENCH_STREAMS", 300);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = target.child.id();
    let rss_before = rss_kb(Some(pid));
    let mut open = Vec::with_capacity(streams);
    for _ in 0..streams {
        open.push(connect(target, policy).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kb(Some(pid));
    drop(open);
    Figures {
        pings_per_second,
        setups_per_second,
        kib_per_stream: rss_after.saturating_sub(rss_before) as f64 / streams as f64,
    }
}

async fn connect(target: &Target, policy: &OutboundPolicy<'_>) -> negotiation::Authenticated {
    let socket = tokio::net::TcpStream::connect(target.address)
        .await
        .expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let io: BoxedIo = Box::new(socket);
    negotiation::connect(io, false, "remote.test", target.domain, policy)
        .await
        .unwrap_or_else(|e| panic!("negotiating with {}: {e}", target.name))
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Ok(binary) = std::env::var("CAUSEWAY_BIN") else {
        println!("skipped: CAUSEWAY_BIN is not set (scripts/bench-xmpp sets it)");
        return;
    };
    let prosody = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("prosody").is_file()));
    let dir = std::env::temp_dir().join(format!("causeway-s2s-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    let ca = TestCa::new("Bench CA");
    let generator_tls = Arc::new(
        TlsSettings::new(vec![ca.identity(&["remote.test"])], vec![ca.root()], false).expect("TLS"),
    );
    let answers = Arc::new(Counter::new());
    let generator = S2s::start(
        config("remote.test", GENERATOR),
        generator_tls.clone(),
        answers.clone(),
    )
    .await
    .expect("the load generator");
    let secret = Secret::random();
    let policy = OutboundPolicy {
        tls: &generator_tls,
        require_tls: true,
        dialback: false,
        secret: &secret,
        limits: Limits::default(),
    };

    let causeway_dir = dir.join("causeway");
    std::fs::create_dir_all(&causeway_dir).expect("dir");
    let causeway = start_causeway(&binary, &causeway_dir, &ca).await;
    let ours = measure(&causeway, &generator, &answers, &policy).await;
    drop(causeway);
    let theirs = if prosody {
        let prosody_dir = dir.join("prosody");
        std::fs::create_dir_all(&prosody_dir).expect("dir");
        let prosody = start_prosody(&prosody_dir, &ca).await;
        Some(measure(&prosody, &generator, &answers, &policy).await)
    } else {
        println!("Prosody is not installed: its column stays empty");
        None
    };
    let _ = std::fs::remove_dir_all(&dir);

    println!();
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "same load, one server each", "Causeway", "Prosody", "ratio"
    );
    let rows = [
        (
            "pings answered/s (one stream each way)",
            ours.pings_per_second,
            theirs.as_ref().map(|f| f.pings_per_second),
        ),
        (
            "stream set-ups/s (TCP+STARTTLS+EXTERNAL)",
            ours.setups_per_second,
            theirs.as_ref().map(|f| f.setups_per_second),
        ),
        (
            "KiB of server memory per open stream",
            ours.kib_per_stream,
            theirs.as_ref().map(|f| f.kib_per_stream),
        ),
    ];
    for (name, ours, theirs) in rows {
        let (theirs, ratio) = match theirs {
            Some(theirs) if theirs > 0.0 => {
                (format!("{theirs:.1}"), format!("{:.2}x", ours / theirs))
            }
            Some(theirs) => (format!("{theirs:.1}"), "-".to_owned()),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!("{name:<44} {ours:>12.1} {theirs:>12} {ratio:>8}");
    }
}
