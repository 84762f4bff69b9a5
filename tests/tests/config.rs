//! Config errors from the real `lwsysd`: an unknown key or section, a
//! value of the wrong type and a value out of range each exit 64 before
//! anything starts, with one line on stderr naming the file, the line and
//! the `[section] key`.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should fail loudly

use std::process::Command;

use lwsys_tests::bin_path;

/// Run `lwsysd --config lwsysd.toml` (plus `args`) on `text` from a scratch
/// directory; its stderr, after checking it exited 64 and created nothing.
fn refused(text: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lwsysd.toml"), text).unwrap();
    let o = Command::new(bin_path("lwsysd"))
        .current_dir(dir.path())
        .args(["--config", "lwsysd.toml"])
        .args(args)
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("XDG_STATE_HOME")
        .output()
        .unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(64), "stderr: {err}");
    assert!(!dir.path().join("lwsys-state").exists(), "started before checking the config");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    err.trim_end().to_owned()
}

#[test]
fn an_unknown_key_names_file_line_and_key() {
    let err = refused("[supervisor]\nboot_target = \"DHCP\"\n\n[control]\nmax_client = 4\n", &[]);
    assert!(
        err.starts_with("lwsysd: lwsysd.toml:5: [control] max_client: unknown field `max_client`"),
        "{err}"
    );
}

#[test]
fn an_unknown_section_names_file_line_and_section() {
    let err = refused("[log]\nlevel = \"info\"\n[logging]\nlevel = \"info\"\n", &[]);
    assert!(
        err.starts_with("lwsysd: lwsysd.toml:3: [logging]: unknown section `logging`"),
        "{err}"
    );
}

#[test]
fn a_wrong_type_names_file_line_and_key() {
    let err = refused("[time]\nsource = \"system\"\ntrust_unsynced = \"yes\"\n", &[]);
    assert!(err.starts_with("lwsysd: lwsysd.toml:3: [time] trust_unsynced: invalid type"), "{err}");
    let err = refused("[blobs]\ndurable = [\"AUTH\", \"NOT_A_KIND\"]\n", &[]);
    assert!(err.starts_with("lwsysd: lwsysd.toml:2: [blobs] durable: "), "{err}");
    assert!(err.contains("NOT_A_KIND"), "{err}");
}

#[test]
fn out_of_range_values_name_file_line_and_their_own_key() {
    let cases = [
        (
            "[control]\nclient_queue_bytes = 16\nmax_clients = 0\n",
            "lwsysd.toml:3: [control] max_clients: expected an integer at least 1, got 0",
        ),
        (
            "[control]\nclient_queue_bytes = 0\n",
            "lwsysd.toml:2: [control] client_queue_bytes: expected an integer at least 1, got 0",
        ),
        (
            "[supervisor]\njournal_len = 2000000\n",
            "lwsysd.toml:2: [supervisor] journal_len: expected an integer from 1 to 1000000, got 2000000",
        ),
        (
            "[time]\nbackoff_min_ms = 500\nbackoff_max_ms = 100\n",
            "lwsysd.toml:3: [time] backoff_max_ms: expected an integer at least backoff_min_ms (500), got 100",
        ),
        (
            "[time]\nresync_secs = 0\n",
            "lwsysd.toml:2: [time] resync_secs: expected an integer at least 1, got 0",
        ),
        (
            "# blobs\n[blobs]\nmax_bytes = 0\n",
            "lwsysd.toml:3: [blobs] max_bytes: expected an integer from 1 to 268435456, got 0",
        ),
        (
            "[ota]\nread_timeout_ms = 0\n",
            "lwsysd.toml:2: [ota] read_timeout_ms: expected an integer at least 1, got 0",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(refused(text, &[]), format!("lwsysd: {want}"), "for {text:?}");
    }
}

#[test]
fn a_bad_flag_value_names_the_flag() {
    let err = refused("", &["--consent-timeout-ms", "0"]);
    assert_eq!(err, "lwsysd: --consent-timeout-ms: expected an integer from 1 to 3600000, got 0");
}

/// `packaging/lwsysd.toml` (installed as /etc/lwsys/lwsysd.toml) shows every
/// key commented out at its default: as shipped it is the defaults, and
/// with every `#key = value` line uncommented it is still the defaults, so
/// a key added, renamed or re-defaulted without updating it fails here.
#[test]
fn the_shipped_config_lists_every_key_at_its_default() {
    use lwsys::config::Config;
    let path = lwsys_tests::workspace_root().join("packaging/lwsysd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(Config::from_toml(&text, &path).unwrap(), Config::default());
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with(' ') => rest,
            _ => l,
        })
        .fold(String::new(), |acc, l| acc + l + "\n");
    let cfg = Config::from_toml(&uncommented, &path).unwrap();
    assert_eq!(cfg, Config::default());
    assert_eq!(
        cfg.to_toml().matches(" = ").count(),
        uncommented.lines().filter(|l| l.contains(" = ") && !l.starts_with('#')).count(),
        "a key is missing from {}",
        path.display()
    );
}

/// lwsysctl finds the socket by `lwsys_messages::socket` (it does not link
/// the daemon), lwsysd places it by `lwsys::config`: for every mix of the
/// variables that move it, with nothing on disk, both name the same path.
#[test]
fn the_client_and_the_daemon_agree_on_the_default_socket() {
    use lwsys::config::{socket_path, state_dir, Cli};
    use lwsys_messages::socket::{client_socket, default_state_dir};
    let vars = ["STATE_DIRECTORY", "XDG_STATE_HOME", "RUNTIME_DIRECTORY"];
    let values = [None, Some(""), Some("/a"), Some("/b:/c"), Some(":/d")];
    let mut checked = 0;
    for s in values {
        for x in values {
            for r in values {
                let env = |k: &str| {
                    let v = if k == vars[0] {
                        s
                    } else if k == vars[1] {
                        x
                    } else if k == vars[2] {
                        r
                    } else {
                        None
                    };
                    v.map(str::to_owned)
                };
                let dir = state_dir(&Cli::default(), env);
                assert_eq!(default_state_dir(env), dir, "{s:?} {x:?} {r:?}");
                let daemon = socket_path(&Cli::default(), &dir, env);
                assert_eq!(client_socket(env, |_| false), daemon, "{s:?} {x:?} {r:?}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 125);
}
