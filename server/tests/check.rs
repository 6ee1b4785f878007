//! `stepgate check` and `stepgate migrate`, run as the real binary against real folders: each
//! broken part (configuration, database, migrations, Redis, key) is named on its own line and
//! the exit status says whether all is well.

use std::path::Path;
use std::process::{Command, Output};

const KEY_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// `stepgate <args>` with a clean environment: only what the test gives.
fn stepgate(data: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stepgate"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STEPGATE_DATA", data)
        .env("RUST_LOG", "error")
        // As `cargo leptos build` compiles it in (a plain `cargo test` build lacks it, and
        // Leptos would say so on stderr).
        .env("LEPTOS_OUTPUT_NAME", "stepgate");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the stepgate binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The line `check` printed for `part`.
fn line<'a>(text: &'a str, part: &str) -> &'a str {
    text.lines()
        .find(|l| l[5..].starts_with(&format!("{part}:")))
        .unwrap_or_else(|| panic!("no line for {part} in:\n{text}"))
}

/// Records KEY_A's check value, as the first start does (any command that opens the engine).
fn first_start(data: &Path) {
    let output = stepgate(data, &[("STEPGATE_KEY", KEY_A)], &["user", "list"]);
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn migrate_brings_a_new_database_up_to_date_once() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("STEPGATE_KEY", KEY_A)];
    let first = stepgate(dir.path(), &env, &["migrate"]);
    assert!(first.status.success(), "{first:?}");
    assert!(
        stdout(&first).starts_with("Migrations: applied "),
        "{}",
        stdout(&first)
    );
    let again = stepgate(dir.path(), &env, &["migrate"]);
    assert!(again.status.success());
    assert!(
        stdout(&again).contains("the database is current"),
        "{}",
        stdout(&again)
    );
    assert!(!stdout(&again).contains("applied 1"), "{}", stdout(&again));
}

#[test]
fn a_sound_installation_checks_out_part_by_part() {
    let dir = tempfile::tempdir().unwrap();
    first_start(dir.path());
    let output = stepgate(dir.path(), &[("STEPGATE_KEY", KEY_A)], &["check"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(line(&text, "configuration").starts_with("ok"), "{text}");
    assert!(line(&text, "database").starts_with("ok"), "{text}");
    assert!(line(&text, "migrations").starts_with("ok"), "{text}");
    assert!(line(&text, "redis").contains("not used"), "{text}");
    assert!(line(&text, "key").starts_with("ok"), "{text}");
    assert!(line(&text, "key").contains("opens this database"), "{text}");
}

#[test]
fn a_new_database_is_missing_its_migrations_and_has_no_key_yet() {
    let dir = tempfile::tempdir().unwrap();
    // An empty SQLite file: the database answers, nothing is applied.
    std::fs::write(dir.path().join("stepgate.db"), b"").unwrap();
    let output = stepgate(dir.path(), &[("STEPGATE_KEY", KEY_A)], &["check"]);
    let text = stdout(&output);
    assert!(!output.status.success(), "{text}");
    assert!(line(&text, "database").starts_with("ok"), "{text}");
    let migrations = line(&text, "migrations");
    assert!(migrations.starts_with("FAIL"), "{text}");
    assert!(migrations.contains("stepgate migrate"), "{text}");
}

#[test]
fn another_key_fails_the_key_line_alone() {
    let dir = tempfile::tempdir().unwrap();
    first_start(dir.path());
    let output = stepgate(dir.path(), &[("STEPGATE_KEY", KEY_B)], &["check"]);
    let text = stdout(&output);
    assert!(!output.status.success(), "{text}");
    assert!(line(&text, "database").starts_with("ok"), "{text}");
    assert!(line(&text, "migrations").starts_with("ok"), "{text}");
    let key = line(&text, "key");
    assert!(key.starts_with("FAIL"), "{text}");
    assert!(key.contains("sealed with another key"), "{text}");
    // `serve` refuses to start with the same sentence, in one line.
    let serve = stepgate(
        dir.path(),
        &[("STEPGATE_KEY", KEY_B), ("LEPTOS_SITE_ADDR", "127.0.0.1:0")],
        &["serve"],
    );
    assert!(!serve.status.success());
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("sealed with another key"), "{stderr}");
}

#[test]
fn an_unreachable_database_and_redis_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on this host: nothing listens, the connection is refused at once.
    let output = stepgate(
        dir.path(),
        &[
            ("STEPGATE_KEY", KEY_A),
            (
                "DATABASE_URL",
                "postgres://stepgate:hunter2@127.0.0.1:1/stepgate",
            ),
            ("STEPGATE_REDIS_URL", "redis://127.0.0.1:1/0"),
        ],
        &["check"],
    );
    let text = stdout(&output);
    assert!(!output.status.success(), "{text}");
    assert!(line(&text, "configuration").starts_with("ok"), "{text}");
    assert!(line(&text, "database").starts_with("FAIL"), "{text}");
    assert!(line(&text, "migrations").starts_with("-"), "{text}");
    assert!(line(&text, "redis").starts_with("FAIL"), "{text}");
    assert!(line(&text, "key").starts_with("-"), "{text}");
    // The URL's password is never printed.
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn a_broken_configuration_stops_the_check_at_its_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = stepgate(
        dir.path(),
        &[("STEPGATE_KEY", KEY_A), ("STEPGATE_STEP_TIMEOUT", "soon")],
        &["check"],
    );
    let text = stdout(&output);
    assert!(!output.status.success(), "{text}");
    let configuration = line(&text, "configuration");
    assert!(configuration.starts_with("FAIL"), "{text}");
    assert!(configuration.contains("STEPGATE_STEP_TIMEOUT"), "{text}");
    for part in ["database", "migrations", "redis", "key"] {
        assert!(line(&text, part).starts_with("-"), "{text}");
    }
}
