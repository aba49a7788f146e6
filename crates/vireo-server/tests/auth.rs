//! Password authentication from a client socket: the password file, `vireo passwd`, CONNACK
//! codes for 3.1.1 and 5.0, anonymous clients, checks off the event loop, and Debian's
//! mosquitto clients with `-u` / `-P`.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use vireo_codec::{ByteString, Bytes, Connect, Packet, ProtocolVersion, QoS, QosPid};
use vireo_server::passwd::{PasswordFile, hash_password_with};

/// A password file in a fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vireo-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A password file with `users` (name, password), cheap hashes so the tests stay quick.
fn password_file(dir: &TempDir, users: &[(&str, &str)]) -> PathBuf {
    let text: String = users
        .iter()
        .map(|(u, p)| {
            format!(
                "{u}:{}\n",
                hash_password_with(p.as_bytes(), 256, 1, 1).unwrap()
            )
        })
        .collect();
    let path = dir.file("passwd");
    std::fs::write(&path, text).unwrap();
    path
}

fn credentials(
    version: ProtocolVersion,
    id: &str,
    user: Option<&str>,
    password: Option<&str>,
) -> Connect {
    let mut c = Connect::new(id);
    c.protocol = version;
    c.username = user.map(ByteString::from);
    c.password = password.map(|p| Bytes::copy_from_slice(p.as_bytes()));
    c
}

/// The CONNACK code for these credentials.
fn connack_code(addr: std::net::SocketAddr, connect: Connect) -> u8 {
    match Client::connect_with(addr, connect).1 {
        Packet::ConnAck(a) => a.code.0,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// 3.1.1: the right password connects; a wrong one, an unknown user or a missing password get
/// CONNACK 0x04 and the close; with a password file, anonymous clients get 0x05.
/// [MQTT-3.2.2-5] a refusing CONNACK is followed by the close.
#[test]
fn v311_passwords_checked_with_connack_codes() {
    let dir = TempDir::new("v311");
    let path = password_file(&dir, &[("alice", "wonder"), ("bob", "builder")]);
    let broker = start_with(|c| c.password_file = Some(path));
    let addr = broker.local_addr();
    let v = ProtocolVersion::V311;
    let (mut ok, ack) =
        Client::connect_with(addr, credentials(v, "a", Some("alice"), Some("wonder")));
    assert!(matches!(ack, Packet::ConnAck(a) if a.code.0 == 0));
    ok.subscribe(&[("t", QoS::AtMostOnce)]);
    for (user, password) in [
        (Some("alice"), Some("builder")),
        (Some("carol"), Some("wonder")),
        (Some("bob"), None),
    ] {
        let (mut c, ack) = Client::connect_with(addr, credentials(v, "x", user, password));
        assert!(
            matches!(ack, Packet::ConnAck(ref a) if a.code.0 == 0x04 && !a.session_present),
            "{user:?}/{password:?}: {ack:?}"
        );
        assert!(c.closed_silently(), "[MQTT-3.2.2-5]");
    }
    assert_eq!(connack_code(addr, credentials(v, "y", None, None)), 0x05);
    assert_eq!(
        broker
            .stats()
            .auth_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    // The accepted client was not disturbed.
    ok.publish("t", b"still here", QoS::AtMostOnce, false, 0);
    assert_eq!(&ok.recv_publish().payload[..], b"still here");
}

/// 5.0: wrong credentials get CONNACK 0x86, anonymous 0x87; `allow_anonymous = true` lets
/// clients without a user name in beside the password file, and still checks named ones.
#[test]
fn v5_passwords_checked_with_reason_codes() {
    let dir = TempDir::new("v5");
    let path = password_file(&dir, &[("alice", "wonder")]);
    let strict = start_with(|c| c.password_file = Some(path.clone()));
    let v = ProtocolVersion::V5;
    let addr = strict.local_addr();
    assert_eq!(
        connack_code(addr, credentials(v, "a", Some("alice"), Some("wonder"))),
        0
    );
    assert_eq!(
        connack_code(addr, credentials(v, "b", Some("alice"), Some("x"))),
        0x86
    );
    assert_eq!(connack_code(addr, credentials(v, "c", None, None)), 0x87);
    let open = start_with(|c| {
        c.password_file = Some(path);
        c.allow_anonymous = Some(true);
    });
    let addr = open.local_addr();
    assert_eq!(connack_code(addr, credentials(v, "d", None, None)), 0);
    assert_eq!(
        connack_code(addr, credentials(v, "e", Some("alice"), Some("no"))),
        0x86
    );
}

/// Without a password file anonymous clients are the default; `allow_anonymous = false` then
/// refuses them (0x05) and takes user names as given, as Mosquitto does.
#[test]
fn anonymous_default_and_refusal_without_password_file() {
    let v = ProtocolVersion::V311;
    let open = start();
    assert_eq!(
        connack_code(open.local_addr(), credentials(v, "a", None, None)),
        0
    );
    let closed = start_with(|c| c.allow_anonymous = Some(false));
    let addr = closed.local_addr();
    assert_eq!(connack_code(addr, credentials(v, "b", None, None)), 0x05);
    assert_eq!(
        connack_code(addr, credentials(v, "c", Some("u"), Some("p"))),
        0
    );
}

/// A slow hash must not stall the worker: while one client's password is being checked (a
/// deliberately expensive argon2 hash), a connected client on the same broker gets its QoS 1
/// round trip answered, and its PUBACK arrives before the slow client's CONNACK.
#[test]
fn password_checks_do_not_stall_other_clients() {
    let dir = TempDir::new("slow");
    let slow = hash_password_with(b"slow", 64 * 1024, 8, 1).unwrap();
    let path = dir.file("passwd");
    std::fs::write(&path, format!("slow:{slow}\n")).unwrap();
    let broker = start_with(|c| {
        c.password_file = Some(path);
        c.allow_anonymous = Some(true);
        c.workers = 1;
    });
    let addr = broker.local_addr();
    let mut busy = Client::connect(addr, "busy");
    let mut waiting = Raw::open(addr);
    waiting.send(&Packet::Connect(Box::new(credentials(
        ProtocolVersion::V311,
        "w",
        Some("slow"),
        Some("slow"),
    ))));
    // Had the worker checked the hash inline, it would have read the CONNECT (sent first)
    // and answered it before any of these PUBACKs.
    for id in 1..=10 {
        busy.publish("rt", b"ping", QoS::AtLeastOnce, false, id);
    }
    assert!(
        waiting
            .frame_within(std::time::Duration::from_millis(5))
            .is_none(),
        "the check was done before the other client was served"
    );
    assert_eq!(
        waiting.frame(),
        [0x20, 0x02, 0x00, 0x00],
        "then the CONNACK"
    );
}

fn vireo_passwd(flags: &[&str], file: &Path, user: &str, stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .arg("passwd")
        .args(flags)
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `vireo passwd FILE USER` adds and changes users with the password read from standard input
/// (never argv), `-D` deletes; the file is owner-only and holds argon2id hashes, never the
/// password; the broker accepts what it wrote.
#[test]
fn vireo_passwd_adds_changes_and_deletes_users() {
    let dir = TempDir::new("cli");
    let file = dir.file("passwd");
    for (user, password) in [("alice", "one\n"), ("bob", "two\n"), ("alice", "three\r\n")] {
        let out = vireo_passwd(&[], &file, user, password);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("alice:$argon2id$"), "{text}");
    assert!(!text.contains("three") && !text.contains("two"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "readable by its owner only: {mode:o}");
    }
    let loaded = PasswordFile::load(&file).unwrap();
    assert!(loaded.verify("alice", b"three") && !loaded.verify("alice", b"one"));
    assert!(vireo_passwd(&["-D"], &file, "bob", "").status.success());
    let out = vireo_passwd(&["-D"], &file, "bob", "");
    assert!(!out.status.success(), "deleting a missing user fails");
    let out = vireo_passwd(&[], &file, "carol", "\n");
    assert!(!out.status.success(), "empty password");
    let loaded = PasswordFile::load(&file).unwrap();
    assert_eq!(loaded.len(), 1);

    let broker = start_with(|c| c.password_file = Some(file.clone()));
    let v = ProtocolVersion::V311;
    let addr = broker.local_addr();
    assert_eq!(
        connack_code(addr, credentials(v, "a", Some("alice"), Some("three"))),
        0
    );
    assert_eq!(
        connack_code(addr, credentials(v, "b", Some("bob"), Some("two"))),
        0x04
    );
}

/// A password file that is not one is a clear error at start, naming the line.
#[test]
fn bad_password_file_refuses_to_start() {
    let dir = TempDir::new("bad");
    let path = dir.file("passwd");
    std::fs::write(&path, "# users\nalice:plaintext\n").unwrap();
    let mut config = vireo_server::Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        password_file: Some(path),
        ..vireo_server::Config::default()
    };
    config.workers = 1;
    let err = vireo_server::Server::start(config).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(
        !err.contains("plaintext"),
        "the file's contents stay out of the log: {err}"
    );
}

/// Debian's mosquitto clients with `-u` / `-P`: the right password subscribes and receives,
/// a wrong one is refused ("not authorised" / bad user name or password) and exits non-zero.
#[test]
fn mosquitto_clients_with_passwords() {
    let dir = TempDir::new("mosq");
    let path = password_file(&dir, &[("alice", "wonder")]);
    let broker = start_with(|c| c.password_file = Some(path));
    let port = broker.local_addr().port();
    let run = |tool: &str, args: &[&str]| mosquitto_tool(tool, port, args);
    let ok = ["-u", "alice", "-P", "wonder"];
    let pubbed = run(
        "mosquitto_pub",
        &[&ok[..], &["-t", "k", "-m", "v", "-r", "-q", "1"]].concat(),
    );
    assert!(
        pubbed.status.success(),
        "{}",
        String::from_utf8_lossy(&pubbed.stderr)
    );
    let got = run(
        "mosquitto_sub",
        &[&ok[..], &["-t", "k", "-C", "1", "-W", "5"]].concat(),
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout), "v\n");
    for version in ["mqttv311", "mqttv5"] {
        let bad = run(
            "mosquitto_sub",
            &[
                "-V", version, "-u", "alice", "-P", "nope", "-t", "k", "-C", "1", "-W", "5",
            ],
        );
        assert!(!bad.status.success(), "{version}");
        let err = String::from_utf8_lossy(&bad.stderr).to_lowercase();
        assert!(
            err.contains("not authori") || err.contains("bad user"),
            "{version}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Authorization: the ACL file.

const ACL: &str = "\
# clients without a user name
topic read public/#
pattern write devices/%c/#
user alice
topic readwrite alice/#
topic deny alice/secret/#
user admin
topic readwrite #
";

fn acl_broker(dir: &TempDir) -> vireo_server::ServerHandle {
    let path = dir.file("acl");
    std::fs::write(&path, ACL).unwrap();
    start_with(|c| c.acl_file = Some(path))
}

fn user(addr: std::net::SocketAddr, version: ProtocolVersion, id: &str, name: &str) -> Client {
    let (c, ack) = Client::connect_with(addr, credentials(version, id, Some(name), None));
    assert!(
        matches!(ack, Packet::ConnAck(ref a) if a.code.0 == 0),
        "{ack:?}"
    );
    c
}

/// 3.1.1: filters the ACL does not let a client read get SUBACK 0x80 (a filter reaching past
/// the grant included); a PUBLISH it may not write is acknowledged as usual, as Mosquitto
/// does, and neither routed nor retained [MQTT-3.3.5-2].
#[test]
fn v311_acl_decides_subscriptions_and_publishes() {
    let dir = TempDir::new("acl311");
    let broker = acl_broker(&dir);
    let addr = broker.local_addr();
    let v = ProtocolVersion::V311;
    let mut admin = user(addr, v, "admin-1", "admin");
    assert_eq!(admin.subscribe(&[("#", QoS::AtLeastOnce)]), vec![1]);
    let mut reader = user(addr, v, "alice-2", "alice");
    let codes = reader.subscribe(&[
        ("alice/x/#", QoS::AtLeastOnce),
        ("alice/#", QoS::AtLeastOnce),  // reaches alice/secret
        ("public/#", QoS::AtLeastOnce), // anonymous clients' rule
        ("#", QoS::AtMostOnce),
    ]);
    assert_eq!(codes, vec![1, 0x80, 0x80, 0x80]);
    let mut alice = user(addr, v, "alice-1", "alice");

    alice.publish("alice/x/1", b"one", QoS::AtLeastOnce, false, 1);
    // [MQTT-3.3.5-2] PUBACK all the same (the publish helper checks it), and not delivered.
    alice.publish("bob/x", b"not hers", QoS::AtLeastOnce, false, 2);
    alice.publish("alice/secret/k", b"denied", QoS::ExactlyOnce, false, 3); // runs to PUBCOMP
    alice.publish("bob/r", b"kept?", QoS::AtMostOnce, true, 0);
    alice.publish("alice/x/2", b"two", QoS::AtLeastOnce, false, 4);
    // Order per publisher: had a refused message been routed, it would come in between.
    let got: Vec<_> = (0..2)
        .map(|_| String::from_utf8(admin.recv_publish_ack().payload.to_vec()).unwrap())
        .collect();
    assert_eq!(got, ["one", "two"]);
    for want in ["one", "two"] {
        assert_eq!(&reader.recv_publish_ack().payload[..], want.as_bytes());
    }
    // Nothing retained for the refused retained PUBLISH.
    let mut admin2 = user(addr, v, "admin-2", "admin");
    admin2.subscribe(&[("bob/#", QoS::AtMostOnce)]);
    admin2.expect_nothing();
    // Three filters and three PUBLISHes refused.
    let denied = broker
        .stats()
        .acl_denied
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(denied, 6);
}

/// 5.0: the same refusals say so: SUBACK 0x87 for the filter, PUBACK / PUBREC 0x87 (the QoS 2
/// exchange ends there), a QoS 0 PUBLISH dropped without a DISCONNECT.
#[test]
fn v5_acl_refusals_carry_0x87() {
    let dir = TempDir::new("acl5");
    let broker = acl_broker(&dir);
    let addr = broker.local_addr();
    let v = ProtocolVersion::V5;
    let mut alice = user(addr, v, "alice-5", "alice");
    assert_eq!(
        alice.subscribe(&[("alice/#", QoS::AtLeastOnce), ("alice/a", QoS::AtLeastOnce)]),
        vec![0x87, 1]
    );
    let reason = |p: Option<Packet>| match p {
        Some(Packet::PubAck(a) | Packet::PubRec(a)) => a.reason.0,
        other => panic!("expected an ack, got {other:?}"),
    };
    alice.send_publish("bob/x", b"x", QosPid::AtLeastOnce(pid(1)), false, &[]);
    assert_eq!(reason(alice.recv()), 0x87);
    alice.send_publish("bob/x", b"x", QosPid::ExactlyOnce(pid(2)), false, &[]);
    assert_eq!(reason(alice.recv()), 0x87);
    alice.send_publish("bob/x", b"x", QosPid::AtMostOnce, false, &[]);
    alice.send_publish("alice/a", b"ok", QosPid::AtLeastOnce(pid(3)), false, &[]);
    assert_eq!(
        reason(alice.recv()),
        0x00,
        "still connected, allowed topics served"
    );
    assert_eq!(&alice.recv_publish_ack().payload[..], b"ok");
}

/// Clients without a user name get the rules before any `user` line, and the patterns with
/// their client id in place of `%c`.
#[test]
fn acl_anonymous_rules_and_client_id_patterns() {
    let dir = TempDir::new("aclanon");
    let broker = acl_broker(&dir);
    let addr = broker.local_addr();
    let mut admin = user(addr, ProtocolVersion::V311, "admin-3", "admin");
    admin.subscribe(&[("#", QoS::AtLeastOnce)]);
    let mut anon = Client::connect(addr, "dev1");
    assert_eq!(
        anon.subscribe(&[
            ("public/+", QoS::AtLeastOnce),
            ("devices/#", QoS::AtLeastOnce)
        ]),
        vec![1, 0x80]
    );
    anon.publish("public/a", b"read-only", QoS::AtLeastOnce, false, 1);
    anon.publish("devices/dev2/t", b"not its own", QoS::AtLeastOnce, false, 2);
    anon.publish("devices/dev1/t", b"its own", QoS::AtLeastOnce, false, 3);
    assert_eq!(&admin.recv_publish_ack().payload[..], b"its own");
}

/// A Will whose topic the client may not publish to refuses the CONNECT (as Mosquitto does):
/// 3.1.1 CONNACK 0x05, 5.0 0x87.
#[test]
fn acl_will_topic_must_be_writable() {
    let dir = TempDir::new("aclwill");
    let broker = acl_broker(&dir);
    let addr = broker.local_addr();
    for (version, code) in [(ProtocolVersion::V311, 0x05), (ProtocolVersion::V5, 0x87)] {
        for (will_topic, want) in [("bob/will", code), ("alice/will", 0)] {
            let mut c = credentials(version, "alice-w", Some("alice"), None);
            c.will = Some(vireo_codec::LastWill {
                topic: topic(will_topic),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Default::default(),
            });
            assert_eq!(connack_code(addr, c), want, "{version:?} {will_topic}");
        }
    }
}

/// A broken ACL file stops the start with the line that is wrong; a file with no rules (only
/// comments) denies nothing.
#[test]
fn acl_file_errors_name_the_line() {
    let dir = TempDir::new("aclbad");
    let path = dir.file("acl");
    std::fs::write(&path, "user alice\ntopic readwrite alice/#\ntopci read x\n").unwrap();
    let config = vireo_server::Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        acl_file: Some(path.clone()),
        ..Default::default()
    };
    let err = vireo_server::Server::start(config.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3"), "{err}");
    std::fs::write(&path, "# nothing yet\n").unwrap();
    let broker = vireo_server::Server::start(config).unwrap();
    let mut c = Client::connect(broker.local_addr(), "any");
    assert_eq!(c.subscribe(&[("#", QoS::AtMostOnce)]), vec![0]);
}

/// Debian's mosquitto clients against the ACL: an allowed subscription receives, a denied one
/// is reported by the client as denied.
#[test]
fn mosquitto_clients_with_an_acl() {
    let dir = TempDir::new("aclmosq");
    let broker = acl_broker(&dir);
    let port = broker.local_addr().port();
    let run = |tool: &str, args: &[&str]| mosquitto_tool(tool, port, args);
    let pubbed = run(
        "mosquitto_pub",
        &["-u", "alice", "-t", "alice/k", "-m", "v", "-r", "-q", "1"],
    );
    assert!(
        pubbed.status.success(),
        "{}",
        String::from_utf8_lossy(&pubbed.stderr)
    );
    let got = run(
        "mosquitto_sub",
        &["-u", "alice", "-t", "alice/k", "-C", "1", "-W", "5"],
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout), "v\n");
    for version in ["mqttv311", "mqttv5"] {
        let denied = run(
            "mosquitto_sub",
            &[
                "-V", version, "-u", "alice", "-t", "bob/#", "-C", "1", "-W", "5",
            ],
        );
        let err = String::from_utf8_lossy(&denied.stderr).to_lowercase();
        assert!(err.contains("denied"), "{version}: {err}");
    }
}

// ---------------------------------------------------------------------------------------
// Reloading the password and ACL files (SIGHUP).

/// The PUBACK reason a 5.0 client gets for a QoS 1 PUBLISH on `t`.
fn puback_reason(c: &mut Client, t: &str, id: u16) -> u8 {
    c.send_publish(t, b"x", QosPid::AtLeastOnce(pid(id)), false, &[]);
    loop {
        match c.recv() {
            Some(Packet::PubAck(a)) => return a.reason.0,
            Some(Packet::Publish(_)) => {}
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

/// A reload swaps both files without dropping a connection: new CONNECTs meet the new
/// passwords, connected clients the new ACL at their next PUBLISH; a file that does not parse
/// leaves the one in use in place and says why.
#[test]
fn v5_reload_swaps_passwords_and_acl_keeping_connections() {
    let dir = TempDir::new("reload");
    let passwd = password_file(&dir, &[("alice", "wonder")]);
    let acl = dir.file("acl");
    std::fs::write(&acl, "user alice\ntopic readwrite a/#\n").unwrap();
    let broker = start_with(|c| {
        c.password_file = Some(passwd.clone());
        c.acl_file = Some(acl.clone());
    });
    let addr = broker.local_addr();
    let v5 = ProtocolVersion::V5;
    let login = |pw: &str| connack_code(addr, credentials(v5, "probe", Some("alice"), Some(pw)));
    let (mut kept, ack) =
        Client::connect_with(addr, credentials(v5, "kept", Some("alice"), Some("wonder")));
    assert!(
        matches!(ack, Packet::ConnAck(ref a) if a.code.0 == 0),
        "{ack:?}"
    );
    // Allowed, with no subscriber: 0x10 No matching subscribers.
    assert_eq!(puback_reason(&mut kept, "a/1", 1), 0x10);
    assert_eq!(puback_reason(&mut kept, "b/1", 2), 0x87);

    password_file(&dir, &[("alice", "changed")]);
    std::fs::write(&acl, "user alice\ntopic readwrite b/#\n").unwrap();
    broker.reload().unwrap();
    assert_eq!(login("wonder"), 0x86, "the old password is gone");
    assert_eq!(login("changed"), 0x00);
    // The same connection, under the new ACL (its cached verdict on a/1 went too).
    assert_eq!(puback_reason(&mut kept, "a/1", 3), 0x87);
    assert_eq!(puback_reason(&mut kept, "b/1", 4), 0x10);

    std::fs::write(&acl, "user alice\ntopic sometimes b/#\nbogus\n").unwrap();
    std::fs::write(&passwd, "alice:not-a-hash\n").unwrap();
    let err = broker.reload().unwrap_err();
    assert!(err.contains("line 3") && err.contains("acl_file"), "{err}");
    assert_eq!(login("changed"), 0x00, "the password file in use stays");
    assert_eq!(
        puback_reason(&mut kept, "b/2", 5),
        0x10,
        "the ACL in use stays"
    );
}

/// `kill -HUP` reloads a running `vireo`: the broker logs the reload and new CONNECTs meet
/// the new password file.
#[test]
fn sighup_reloads_the_password_file() {
    let dir = TempDir::new("sighup");
    let passwd = password_file(&dir, &[("alice", "wonder")]);
    let config = dir.file("vireo.toml");
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:0\"\nworkers = 1\npassword_file = \"{}\"\n",
            passwd.display()
        ),
    )
    .unwrap();
    let broker = Broker::spawn(&["--config", config.to_str().unwrap()]);
    let addr = broker.addr();
    let v = ProtocolVersion::V311;
    let login = |pw: &str| connack_code(addr, credentials(v, "probe", Some("alice"), Some(pw)));
    assert_eq!(login("wonder"), 0x00);
    password_file(&dir, &[("alice", "changed")]);
    let pid = broker.child.id().to_string();
    let hup = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(hup.success());
    broker.line_with("password file reloaded");
    assert_eq!(login("wonder"), 0x04);
    assert_eq!(login("changed"), 0x00);
}

/// A listener's `allow_anonymous` overrides the top-level one: with a password file (anonymous
/// off), a loopback listener that allows anonymous clients lets them in, the other refuses
/// them with 0x05 / 0x87.
#[test]
fn listener_allow_anonymous_overrides_the_top_level() {
    let dir = TempDir::new("listeneranon");
    let passwd = password_file(&dir, &[("alice", "wonder")]);
    let mut open = vireo_server::ListenerConfig::tcp("127.0.0.1:0".parse().unwrap());
    open.allow_anonymous = Some(true);
    let closed = vireo_server::ListenerConfig::tcp("127.0.0.1:0".parse().unwrap());
    let broker = start_with(|c| {
        c.password_file = Some(passwd);
        c.listeners = vec![open, closed];
    });
    let (open, closed) = (broker.listener_addrs()[0], broker.listener_addrs()[1]);
    for (version, refused) in [(ProtocolVersion::V311, 0x05), (ProtocolVersion::V5, 0x87)] {
        let anon = |addr| connack_code(addr, credentials(version, "anon", None, None));
        assert_eq!(anon(open), 0x00, "{version:?}");
        assert_eq!(anon(closed), refused, "{version:?}");
        let alice = credentials(version, "alice", Some("alice"), Some("wonder"));
        assert_eq!(
            connack_code(closed, alice),
            0x00,
            "{version:?}: passwords still work"
        );
    }
}
