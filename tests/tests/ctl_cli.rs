//! `lwsysctl` as a well-made Linux CLI: shell completions and man pages
//! generated from its clap definitions, the OTA issuer's tools (`ota
//! keygen`, `ota publish`, `ota verify`) and `ota watch` against a real
//! `lwsysd` installing from a repository the tools made, `--json` on every
//! command, and colour only on a terminal.
#![allow(clippy::unwrap_used)] // a test that cannot read its input should fail loudly

#[path = "common/ota_repo.rs"]
mod ota_repo;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use lwsys_tests::{bin_path, Options, TestDaemon, WAIT};
use serde_json::{json, Value};

fn lwsysctl(args: &[&str]) -> Output {
    Command::new(bin_path("lwsysctl"))
        .args(args)
        .env_remove("LWSYS_SOCKET")
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

fn with_socket(d: &TestDaemon, args: &[&str]) -> Output {
    let socket = d.socket().to_str().unwrap().to_owned();
    let mut all = vec!["--socket", socket.as_str()];
    all.extend_from_slice(args);
    lwsysctl(&all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = lwsysctl(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// The top-level subcommands, read from `--help` (not from the code that
/// generates the completions and pages, so a command they miss is caught).
fn subcommands() -> Vec<String> {
    let help = ok(&["--help"]);
    let mut names = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                break;
            }
            let name = line.split_whitespace().next().unwrap().to_owned();
            if name != "help" {
                names.push(name);
            }
        }
    }
    assert!(names.len() > 15, "{help}");
    names
}

#[test]
fn completions_for_each_shell_offer_every_subcommand() {
    let names = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&["completions", shell]);
        assert!(script.contains("lwsysctl"), "{shell}");
        for name in &names {
            assert!(script.contains(name.as_str()), "{shell} completion lacks {name}");
        }
        // Nested commands are completed too.
        for nested in ["publish", "keygen", "report-current", "destroy"] {
            assert!(script.contains(nested), "{shell} completion lacks {nested}");
        }
    }
    assert!(lwsysctl(&["completions", "tcsh"]).status.code() == Some(2));
}

#[test]
fn bash_completion_script_is_valid_bash_and_completes_subcommands() {
    let script = ok(&["completions", "bash"]);
    let mut bash = Command::new("bash").arg("-n").stdin(Stdio::piped()).spawn().unwrap();
    bash.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(bash.wait().unwrap().success(), "bash -n rejected the completion script");
    // Loaded into bash, it completes `lwsysctl o` to `ota`.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lwsysctl.bash");
    std::fs::write(&file, &script).unwrap();
    let probe = format!(
        "source {}; COMP_WORDS=(lwsysctl o); COMP_CWORD=1; _lwsysctl lwsysctl o lwsysctl; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let o = Command::new("bash").arg("-c").arg(probe).output().unwrap();
    let words = stdout(&o);
    assert!(words.lines().any(|w| w == "ota"), "{words}{}", stderr(&o));
}

/// `text` as man(1) renders it, when man is installed.
fn rendered(roff: &str) -> Option<String> {
    let mut man = Command::new("man")
        .args(["-l", "-"])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "200")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    man.stdin.take().unwrap().write_all(roff.as_bytes()).unwrap();
    let o = man.wait_with_output().unwrap();
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn man_page_has_a_title_and_every_subcommand() {
    let page = ok(&["man"]);
    assert!(page.contains(".TH lwsysctl 1"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for name in subcommands() {
        // roff escapes hyphens: lwsysctl\-policy\-invalidate(1).
        let entry = format!("lwsysctl\\-{}(1)", name.replace('-', "\\-"));
        assert!(page.contains(&entry), "page lacks {entry}");
    }
    if let Some(text) = rendered(&page) {
        assert!(text.contains("lwsysctl-ota(1)"), "{text}");
        assert!(text.contains("--json"), "{text}");
    }
    // Each subcommand has its own page, with its own options.
    let publish = ok(&["man", "lwsysctl-ota-publish"]);
    assert!(publish.contains(".TH lwsysctl-ota-publish 1"), "{publish}");
    assert!(publish.contains("\\-\\-variant"), "{publish}");
    let o = lwsysctl(&["man", "lwsysctl-nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no page"), "{}", stderr(&o));
}

#[test]
fn lwsysd_prints_its_own_page_and_lwsysctl_man_points_there() {
    // The client does not link the daemon, so the daemon prints its page.
    let o = Command::new(bin_path("lwsysd")).arg("--man").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(page.contains(".TH lwsysd 1"), "{page}");
    for flag in ["config", "state\\-dir", "socket", "stdio", "print\\-config", "man"] {
        assert!(page.contains(&format!("\\-\\-{flag}")), "lwsysd page lacks --{flag}");
    }
    if let Some(text) = rendered(&page) {
        assert!(text.contains("--print-config"), "{text}");
    }
    // A page needs no config: a missing file does not hide it.
    let o = Command::new(bin_path("lwsysd"))
        .args(["--man", "--config", "/nonexistent/lwsysd.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), page);
    let o = lwsysctl(&["man", "lwsysd"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("lwsysd --man"), "{}", stderr(&o));
}

#[test]
fn man_dir_writes_every_lwsysctl_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let listed = ok(&["man", "--dir", out.to_str().unwrap()]);
    for name in ["lwsysctl.1", "lwsysctl-ota-watch.1", "lwsysctl-blob-get.1"] {
        let path = out.join(name);
        assert!(listed.contains(path.to_str().unwrap()), "{name} not listed:\n{listed}");
        assert!(std::fs::read_to_string(&path).unwrap().contains(".TH "), "{name}");
    }
    // lwsysd.1 comes from `lwsysd --man`, not from the client.
    assert!(!out.join("lwsysd.1").exists());
}

/// `lwsysctl ARGS` running in the background, its stdout lines on a
/// channel.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(d: &TestDaemon, args: &[&str]) -> Self {
        let mut child = Command::new(bin_path("lwsysctl"))
            .arg("--socket")
            .arg(d.socket())
            .args(args)
            .env_remove("NO_COLOR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn line(&self) -> String {
        self.lines.recv_timeout(WAIT).expect("the watcher printed nothing")
    }

    /// Every line until the watcher exits, and its exit code and stderr.
    fn finish(mut self) -> (Vec<String>, Option<i32>, String) {
        let mut all = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(WAIT) {
            all.push(l);
        }
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err).unwrap();
        (all, self.child.wait().unwrap().code(), err)
    }
}

const VARIANT: &str = "xyz-v1";

/// Keys and a repository made by the CLI, served on 127.0.0.1.
struct Published {
    dir: tempfile::TempDir,
    url: String,
}

impl Published {
    fn new(image: &[u8]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = |s: &str| dir.path().join(s).to_str().unwrap().to_owned();
        let keys = ok(&["--json", "ota", "keygen", &p("keys")]);
        let keys: Value = serde_json::from_str(&keys).unwrap();
        assert_eq!(keys["public"], p("keys/ota-public.jwk"), "{keys}");
        std::fs::write(dir.path().join("fw.img"), image).unwrap();
        let made = ok(&[
            "ota",
            "publish",
            "--key",
            &p("keys/ota-private.jwk"),
            "--variant",
            VARIANT,
            "--unixtime",
            "1000",
            &p("fw.img"),
            &p("repo"),
        ]);
        assert!(made.contains("manifest.jws"), "{made}");
        let url = ota_repo::serve(dir.path().join("repo"));
        Self { dir, url }
    }

    fn path(&self, s: &str) -> String {
        self.dir.path().join(s).to_str().unwrap().to_owned()
    }

    fn daemon(&self) -> TestDaemon {
        let config = format!(
            "[ota]\nrepository = \"{}\"\nvariant = \"{VARIANT}\"\npublic_jwk = \"{}\"\n\n\
             [system]\nreboot = \"/bin/true\"\n",
            self.url,
            self.path("keys/ota-public.jwk")
        );
        TestDaemon::with(Options { config: Some(config), ..Options::default() })
    }
}

#[test]
fn keygen_then_publish_make_a_repository_that_verifies_with_the_public_key() {
    let image: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let repo = Published::new(&image);
    let key = repo.path("keys/ota-public.jwk");
    let v =
        ok(&["--json", "ota", "verify", "--key", &key, "--variant", VARIANT, &repo.path("repo")]);
    let v: Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(
        (v["manifest"]["size"].clone(), v["manifest"]["unixtime"].clone()),
        (json!(200_000), json!(1000))
    );
    assert_eq!(v["manifest"]["sha512"].as_str().unwrap().len(), 128);
    // Only an exact variant, only the right key.
    let o = lwsysctl(&["ota", "verify", "--key", &key, "--variant", "xyz", &repo.path("repo")]);
    assert_eq!(o.status.code(), Some(1));
    let other = repo.path("other");
    ok(&["ota", "keygen", &other]);
    let wrong = format!("{other}/ota-public.jwk");
    let o = lwsysctl(&["ota", "verify", "--key", &wrong, "--variant", VARIANT, &repo.path("repo")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("signature"), "{}", stderr(&o));
    // keygen never overwrites a key.
    let o = lwsysctl(&["ota", "keygen", &other]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: io: create "), "{}", stderr(&o));
}

#[test]
fn publish_flags_choose_the_chunk_layout_and_verify_checks_every_chunk() {
    let image: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let repo = Published::new(&image);
    let (key, private) = (repo.path("keys/ota-public.jwk"), repo.path("keys/ota-private.jwk"));
    let (fw, dir) = (repo.path("fw.img"), repo.path("repo"));
    let publish = |extra: &[&str], t: &str| {
        let mut args = vec!["--json", "ota", "publish", "--key", &private, "--variant", VARIANT];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--unixtime", t, &fw, &dir]);
        let o = lwsysctl(&args);
        (o.status.code(), serde_json::from_str::<Value>(&stdout(&o)).unwrap_or(Value::Null))
    };
    // Default: 64 KiB chunks, 2 of them for 100,000 bytes.
    let (_, v) = publish(&[], "1001");
    assert_eq!(v["manifest"]["chunks"]["chunk_size"], 65536, "{v}");
    assert_eq!(v["chunk_count"], 2, "{v}");
    let (_, v) = publish(&["--chunk-size", "4096"], "1002");
    assert_eq!(
        (v["manifest"]["chunks"]["chunk_size"].clone(), v["chunk_count"].clone()),
        (json!(4096), json!(25))
    );
    let chunks = v["chunks_path"].as_str().unwrap().to_owned();
    let verify = || lwsysctl(&["ota", "verify", "--key", &key, "--variant", VARIANT, &dir]);
    let o = verify();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("chunk index good") && stdout(&o).contains("(25 chunks)"),
        "{}",
        stdout(&o)
    );
    // One flipped byte in the chunk file: verify names the chunk, exits 1.
    let mut b = std::fs::read(&chunks).unwrap();
    let n = b.len();
    b[n - 12] ^= 0x40;
    std::fs::write(&chunks, &b).unwrap();
    let o = verify();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad chunk index") && stderr(&o).contains("chunk 24"),
        "{}",
        stderr(&o)
    );
    // --no-chunks: an upstream release, no lwsys field, nothing else written.
    let (code, v) = publish(&["--no-chunks"], "1003");
    assert_eq!(code, Some(0));
    let mut keys: Vec<&str> =
        v["manifest"].as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["path", "reset", "sha512", "size", "unixtime", "variant"], "{v}");
    assert!(!repo
        .dir
        .path()
        .join("repo")
        .join(VARIANT)
        .join(format!("{VARIANT}-1003.idx"))
        .exists());
    let o = verify();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stdout(&o).contains("chunk"), "{}", stdout(&o));
    // Bad sizes and contradictory flags are refused.
    assert_eq!(publish(&["--chunk-size", "5000"], "1004").0, Some(1));
    assert_eq!(publish(&["--chunk-size", "4096", "--no-chunks"], "1005").0, Some(2));
}

#[test]
fn the_daemon_installs_a_cli_published_release_while_ota_watch_follows_it() {
    let image: Vec<u8> = (0..400_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let repo = Published::new(&image);
    let mut d = repo.daemon();
    d.connect().wait_state("OPERATIONAL");
    let json_watch = Watcher::start(&d, &["--json", "ota", "watch"]);
    let text_watch = Watcher::start(&d, &["ota", "watch"]);
    // The first line is the status: the watch is subscribed.
    let first: Value = serde_json::from_str(&json_watch.line()).unwrap();
    assert_eq!((first["ok"].clone(), first["phase"].clone()), (json!(true), json!("idle")));
    assert!(text_watch.line().ends_with("0% idle"));
    let mut c = d.connect();
    let r = c.ok("ota.check", json!({}));
    assert_eq!((r["updated"].clone(), r["unixtime"].clone()), (json!(true), json!(1000)), "{r}");

    let (lines, code, err) = json_watch.finish();
    assert_eq!(code, Some(0), "{err}");
    let events: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.iter().all(|e| e["event"] == "ota"), "{lines:?}");
    let last = events.last().unwrap();
    assert_eq!((last["phase"].clone(), last["percent"].clone()), (json!("done"), json!(100)));
    assert!(events.iter().any(|e| e["phase"] == "downloading"), "{lines:?}");

    let (lines, code, err) = text_watch.finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(lines.iter().any(|l| l.contains("% downloading")), "{lines:?}");
    let done = lines.last().unwrap();
    assert!(done.starts_with(&format!("[{}] 100% done", "#".repeat(30))), "{lines:?}");
    // A pipe gets no colour and no redrawing.
    assert!(lines.iter().all(|l| !l.contains('\x1b') && !l.contains('\r')), "{lines:?}");

    // The release the CLI made was installed into the inactive slot.
    assert!(d.wait_exit().success());
    assert_eq!(std::fs::read(d.state_dir().join("ota/b/image")).unwrap(), image);
}

#[test]
fn ota_watch_ends_with_exit_1_when_the_update_fails() {
    let repo = Published::new(b"firmware");
    std::fs::remove_file(repo.dir.path().join("repo").join(VARIANT).join("manifest.jws")).unwrap();
    let d = repo.daemon();
    d.connect().wait_state("OPERATIONAL");
    let w = Watcher::start(&d, &["ota", "watch"]);
    assert!(w.line().ends_with("idle"));
    d.connect().err("ota.check", json!({}), "not_found");
    let (lines, code, err) = w.finish();
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(lines.last().unwrap().contains("0% failed"), "{lines:?}");
    assert!(err.starts_with("error: ota: "), "{err}");
    assert!(!err.contains('\x1b'), "{err}");
}

#[test]
fn json_prints_one_json_object_for_every_command() {
    let d = TestDaemon::start(&[]);
    d.connect().wait_state("OPERATIONAL");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys").to_str().unwrap().to_owned();
    let image = dir.path().join("fw.img");
    std::fs::write(&image, b"image").unwrap();
    let repo = dir.path().join("repo").to_str().unwrap().to_owned();
    let private = format!("{keys}/ota-private.jwk");
    let public = format!("{keys}/ota-public.jwk");
    let image = image.to_str().unwrap().to_owned();
    let commands: Vec<Vec<&str>> = vec![
        vec!["state"],
        vec!["steps", "OPERATIONAL"],
        vec!["jump", "OPERATIONAL"],
        vec!["wait", "OPERATIONAL"],
        vec!["wait", "MODAL_UPDATING", "--timeout-ms", "10"],
        vec!["explain"],
        vec!["notifiers"],
        vec!["info"],
        vec!["policy-invalidate"],
        vec!["enter-modal"],
        vec!["leave-modal"],
        vec!["blob", "set", "DEVICE_SERIAL", "sn-1"],
        vec!["blob", "append", "DEVICE_SERIAL", "--b64", "Mg=="],
        vec!["blob", "get", "DEVICE_SERIAL"],
        vec!["blob", "size", "DEVICE_SERIAL"],
        vec!["blob", "empty", "DEVICE_SERIAL"],
        vec!["blob", "destroy", "DEVICE_SERIAL"],
        vec!["clock", "get"],
        vec!["trust", "query", "00:11"],
        vec!["ota", "status"],
        vec!["ota", "check"],
        vec!["ota", "report-current"],
        vec!["ota", "watch"],
        vec!["ota", "keygen", &keys],
        vec!["ota", "publish", "--key", &private, "--variant", "v1", &image, &repo],
        vec!["ota", "verify", "--key", &public, "--variant", "v1", &repo],
        vec!["raw", r#"{"op":"state.get"}"#],
        vec!["shutdown"],
    ];
    for args in commands {
        let mut all = vec!["--json"];
        all.extend_from_slice(&args);
        let o = with_socket(&d, &all);
        let out = stdout(&o);
        assert!(matches!(o.status.code(), Some(0 | 1)), "{args:?}: {out}{}", stderr(&o));
        assert_eq!(out.lines().count(), 1, "{args:?} printed {out:?}");
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?} printed non-JSON {out:?}: {e}"));
        assert!(v.is_object() && v.get("ok").is_some(), "{args:?}: {v}");
        // An error reply exits 1; success exits 0.
        assert_eq!(o.status.code() == Some(0), v["ok"] == true, "{args:?}: {v}");
    }
}

#[test]
fn no_colour_escapes_when_output_is_a_pipe() {
    let d = TestDaemon::start(&[]);
    d.connect().wait_state("OPERATIONAL");
    for args in [
        &["state"][..],
        &["explain"],
        &["info"],
        &["notifiers"],
        &["wait", "MODAL_UPDATING", "--timeout-ms", "10"],
        &["ota", "status"],
        &["blob", "get", "NO_SUCH_KIND"],
    ] {
        let o = with_socket(&d, args);
        assert!(!o.stdout.is_empty() || !o.stderr.is_empty(), "{args:?} printed nothing");
        assert!(!o.stdout.contains(&0x1b), "{args:?}: {}", stdout(&o));
        assert!(!o.stderr.contains(&0x1b), "{args:?}: {}", stderr(&o));
    }
}

/// `lwsysctl ARGS` under a pseudo-terminal (util-linux `script`), with
/// `NO_COLOR` as given; its output as the terminal saw it. `None` when
/// `script` is not installed.
fn on_a_terminal(d: &TestDaemon, args: &str, no_color: Option<&str>) -> Option<String> {
    let line =
        format!("{} --socket {} {args}", bin_path("lwsysctl").display(), d.socket().display());
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]).env_remove("NO_COLOR").stdin(Stdio::null());
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let o = cmd.output().ok()?;
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn errors_are_coloured_only_on_a_terminal_without_no_color() {
    let d = TestDaemon::start(&[]);
    d.connect().wait_state("OPERATIONAL");
    let args = "wait MODAL_UPDATING --timeout-ms 10";
    let Some(tty) = on_a_terminal(&d, args, None) else {
        eprintln!("script(1) not installed: the terminal side is not checked");
        return;
    };
    assert!(tty.contains("\x1b[1;31merror:\x1b[0m timeout"), "{tty:?}");
    let plain = on_a_terminal(&d, args, Some("1")).unwrap();
    assert!(plain.contains("error: timeout") && !plain.contains('\x1b'), "{plain:?}");
}
