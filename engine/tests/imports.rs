//! The engine's module graph follows engine/README.md: no import cycle, nothing but the facade
//! names `crate::Engine`, each folder within its row (`scripts/check-engine-imports.py`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(root: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .arg(repo().join("scripts/check-engine-imports.py"))
        .arg("--root")
        .arg(root)
        .output()
        .expect("python3 runs the import check");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_engine_modules_follow_the_import_rules() {
    let (ok, text) = check(&repo().join("engine/src"));
    assert!(ok, "{text}");
    assert!(text.contains("no cycle"), "{text}");
}

#[test]
fn the_check_finds_a_reach_back_to_the_facade_a_cycle_and_a_folder_out_of_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    copy_tree(&repo().join("engine/src"), &src);
    let append = |file: &str, line: &str| {
        let path = src.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(path, format!("{line}\n{text}")).unwrap();
    };
    append("base/clock.rs", "use crate::Engine;");
    append(
        "sign_in/users.rs",
        "use crate::sign_in::sessions::SessionStore;",
    );
    append("store/db.rs", "use crate::accounts::store::AccountStore;");
    let (ok, text) = check(&src);
    assert!(!ok, "{text}");
    assert!(
        text.contains("base::clock imports the facade"),
        "reach back: {text}"
    );
    assert!(
        text.contains("import cycle among") && text.contains("sign_in::sessions, sign_in::users"),
        "cycle: {text}"
    );
    assert!(
        text.contains("store::db imports accounts::store: store/ may not import accounts/"),
        "folder rule: {text}"
    );
}
