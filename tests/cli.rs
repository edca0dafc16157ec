//! The `liveshop` command as a script would use it.

use std::process::Command;

use liveshop_identity::{Role, Secret};

#[test]
fn token_mints_a_token_the_node_secret_verifies() {
    let data = std::env::temp_dir().join(format!("liveshop-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_liveshop"))
            .args([
                "token",
                "--data-dir",
                data.to_str().unwrap(),
                "--role",
                "host",
                "--room",
                "demo",
                "--name",
                "Host",
            ])
            .env_remove("LIVESHOP_SECRET")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let token = run();
    let secret = std::fs::read_to_string(data.join("secret")).unwrap();
    let secret = Secret::new(secret.trim().as_bytes().to_vec()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let who = secret.verify(&token, "demo", now).unwrap();
    assert_eq!((who.subject.as_str(), who.role, who.name.as_deref()), ("host", Role::Host, Some("Host")));
    // The secret is made once and reused.
    assert!(secret.verify(&run(), "demo", now).is_ok());
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn an_unknown_role_is_refused_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_liveshop"))
        .args(["token", "--role", "admin", "--room", "demo"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("possible values: viewer, moderator, host, merchant")
    );
}
