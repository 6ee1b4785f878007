//! Issue 20's acceptance: a key rotation on a database holding every kind of sealed value,
//! stopped halfway and resumed, after which the new key alone opens everything and the old
//! key is reported droppable. Runs on SQLite, and on Postgres (+ Redis flows) when the
//! STEPGATE_TEST_* variables are set.

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::HeaderMap;
    use data_encoding::BASE64;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use crate::base::clock::ManualClock;
    use crate::base::secrets::{Keyring, SecretKey};
    use crate::providers::NewAccount;
    use crate::second_factor::totp;
    use crate::store::reseal::{ResealCount, SealedKind};
    use crate::test_support::{input, signed_in_user, start, submit, test_config, user_with_totp};
    use crate::{Engine, Progress};

    const START: i64 = 1_700_000_000;
    const PASSWORD: &str = "password-1-quiet-harbor";

    fn old_key() -> SecretKey {
        SecretKey([7; 32])
    }

    fn new_key() -> SecretKey {
        SecretKey([42; 32])
    }

    /// The FlameConnect demo account, connected for `user` with `secrets` sealed at rest.
    async fn flameconnect_account(
        engine: &Engine,
        user: crate::sign_in::users::UserId,
        secrets: serde_json::Value,
    ) -> crate::accounts::store::ConnectedAccount {
        engine
            .accounts()
            .add(
                user,
                "flameconnect",
                &NewAccount {
                    account_id: "demo@flameconnect.test".into(),
                    display_name: "Demo".into(),
                    secrets,
                },
                START,
            )
            .await
            .unwrap()
    }

    async fn open(dir: &tempfile::TempDir, keys: Vec<SecretKey>, at: i64) -> Engine {
        let mut config = test_config(dir.path()).await;
        assert_eq!(
            config.keys.newest(),
            &old_key(),
            "the tests' key is the old one"
        );
        config.keys = Keyring::new(keys).unwrap();
        Engine::open_with_clock(config, Arc::new(ManualClock::at(at)))
            .await
            .unwrap()
    }

    type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;

    /// A webhook receiver on 127.0.0.1 answering 204.
    async fn receiver() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let seen = seen.clone();
                move |headers: HeaderMap, body: String| async move {
                    seen.lock().unwrap().push((headers, body));
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    #[tokio::test]
    async fn a_rotation_stopped_halfway_resumes_and_leaves_everything_to_the_new_key() {
        let dir = tempfile::tempdir().unwrap();

        // Before: every kind of sealed value, under the old key alone.
        let before = open(&dir, vec![old_key()], START).await;
        let (user, seed) = user_with_totp(&before, "rotate@example.org").await;
        // A seed from before key ids: what every database holds from before the keyring.
        let old_format = crate::base::crypto::SecretBox::new(&old_key()).seal_in_old_format(
            &seed,
            format!("stepgate:totp-secret:user:{}", user.id).as_bytes(),
        );
        sqlx::query("UPDATE totp_credentials SET secret_sealed = $1 WHERE user_id = $2")
            .bind(old_format)
            .bind(user.id)
            .execute(before.pool())
            .await
            .unwrap();
        let setting_up = before
            .register("pending@example.org", PASSWORD, PASSWORD)
            .await
            .unwrap();
        let enrollment = before
            .two_factor()
            .begin_app_enrollment(setting_up.id, "pending@example.org", START)
            .await
            .unwrap();
        let pending_seed = totp::base32_decode(&enrollment.secret_base32).unwrap();
        let flow = match start(
            &before,
            "local",
            Some("browser".into()),
            &input(&[("email", "rotate@example.org"), ("password", PASSWORD)]),
        )
        .await
        {
            Ok(Progress::Next(view)) => view.flow_id,
            other => panic!("the code step expected, got {other:?}"),
        };
        let tokens = serde_json::json!({"refresh_token": "rt-before-the-rotation"});
        let account = flameconnect_account(&before, user.id, tokens.clone()).await;
        let (url, seen) = receiver().await;
        let webhook_secret = before.webhooks().set_url(user.id, &url).await.unwrap();
        let link =
            serde_json::json!({"sign_in_link": "https://stepgate.example.org/sign-in-link/x"});
        before
            .webhooks()
            .enqueue_with_secret(
                user.id,
                "account.needs_sign_in",
                &serde_json::json!({"account_id": account.id}),
                Some(&link),
                START,
            )
            .await
            .unwrap();
        before.pool().close().await;

        // The rotation: a new key first, the old kept; the re-seal is killed after a few batches
        // of one row (each committed).
        let rotating = open(&dir, vec![new_key(), old_key()], START + 5).await;
        let (sent, mut batches) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn({
            let rotating = rotating.clone();
            async move {
                rotating
                    .reseal_all(1, move |kind, count| {
                        let _ = sent.send((kind, *count));
                    })
                    .await
            }
        });
        let mut done_before_the_kill = 0;
        for _ in 0..3 {
            let (_, count) = batches.recv().await.expect("a batch");
            done_before_the_kill = count.resealed.max(done_before_the_kill);
        }
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled(), "killed halfway");
        assert!(
            done_before_the_kill > 0,
            "some batches were committed first"
        );
        let halfway = rotating.sealed_with_old_keys().await.unwrap();
        assert!(
            halfway.total().under_old_key > 0 && !halfway.old_keys_unused(),
            "{halfway:?}"
        );

        // Resumed: what was done is skipped, the rest done.
        let resumed = rotating.reseal_all(2, |_, _| {}).await.unwrap();
        for kind in SealedKind::ALL {
            assert_eq!(
                halfway.of(kind).under_old_key,
                resumed.of(kind).resealed,
                "{kind:?}: exactly what was left is re-sealed"
            );
            assert_eq!(resumed.of(kind).unreadable, 0, "{kind:?}");
        }
        let check = rotating.sealed_with_old_keys().await.unwrap();
        assert!(check.old_keys_unused(), "{check:?}");
        assert_eq!(check.total(), ResealCount::default());
        assert_eq!(
            rotating.reseal_all(2, |_, _| {}).await.unwrap().total(),
            ResealCount::default(),
            "a run after the end finds nothing to do"
        );
        rotating.pool().close().await;

        // The old key dropped: the new one alone opens everything (the key check first).
        let after = open(&dir, vec![new_key()], START + 60).await;
        let code = totp::code_at(&seed, after.now(), 6);
        assert_eq!(
            signed_in_user(
                submit(&after, &flow, Some("browser"), &input(&[("code", &code)])).await
            ),
            Some(user.id),
            "the flow started before goes on, and its TOTP seed opens"
        );
        let pending_code = totp::code_at(&pending_seed, after.now(), 6);
        after
            .two_factor()
            .confirm_app_enrollment(setting_up.id, &pending_code, after.now())
            .await
            .expect("the setup waiting for its first code opens");
        assert_eq!(
            after.accounts().secrets(user.id, account.id).await.unwrap(),
            tokens
        );
        assert_eq!(after.deliver_webhooks_now().await.unwrap(), 1);
        let seen = seen.lock().unwrap().clone();
        let [(headers, body)] = seen.as_slice() else {
            panic!("one webhook sent: {seen:?}")
        };
        let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        let key = crate::apps::webhooks::secret_key(webhook_secret.as_str()).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(
            format!(
                "{}.{}.{body}",
                header("webhook-id"),
                header("webhook-timestamp")
            )
            .as_bytes(),
        );
        assert_eq!(
            header("webhook-signature"),
            format!("v1,{}", BASE64.encode(&mac.finalize().into_bytes())),
            "signed with the secret set before the rotation"
        );
        let sent: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            sent["data"]["sign_in_link"], link["sign_in_link"],
            "the delivery's sealed data opened"
        );
        assert_eq!(
            after.sealed_with_old_keys().await.unwrap().total(),
            ResealCount::default()
        );
    }

    /// Values sealed with a key the ring has dropped are named by the check (as unreadable, so no
    /// old key is needed for them), and a start with the old key alone is refused.
    #[tokio::test]
    async fn after_the_rotation_the_old_key_alone_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let before = open(&dir, vec![old_key()], START).await;
        user_with_totp(&before, "old@example.org").await;
        before.pool().close().await;
        let rotating = open(&dir, vec![new_key(), old_key()], START).await;
        rotating.reseal_all(100, |_, _| {}).await.unwrap();
        rotating.pool().close().await;

        let mut config = test_config(dir.path()).await;
        config.keys = old_key().into();
        let refused = Engine::open(config)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(refused.contains("opens this database"), "{refused}");
    }

    /// Sign-in links and their tickets are HMACs, not sealed values: a rotation keeps them
    /// working while the old key is in the ring (an apps' link is shown again as it was, not
    /// revoked and replaced), and new ones are made with the new key.
    #[tokio::test]
    async fn sign_in_links_made_before_a_rotation_still_work() {
        let dir = tempfile::tempdir().unwrap();
        let before = open(&dir, vec![old_key()], START).await;
        let user = before
            .register("links@example.org", PASSWORD, PASSWORD)
            .await
            .unwrap();
        let account =
            flameconnect_account(&before, user.id, serde_json::json!({"refresh_token": "rt"}))
                .await;
        before
            .set_sign_in_links_for_apps(user.id, true)
            .await
            .unwrap();
        let made = before
            .sign_in_links
            .for_apps(user.id, account.id)
            .await
            .unwrap();
        let token = made.url.rsplit('/').next().unwrap().to_owned();
        let ticket = before.open_sign_in_link(&token).await.unwrap();
        before.pool().close().await;

        let rotated = open(&dir, vec![new_key(), old_key()], START + 5).await;
        let again = rotated
            .sign_in_links
            .for_apps(user.id, account.id)
            .await
            .unwrap();
        assert_eq!(again.url, made.url, "the same link, not a new one");
        rotated.open_sign_in_link(&token).await.unwrap();
        assert!(rotated.sign_in_links.live_by_ticket(&ticket).await.is_ok());
        let fresh = rotated.open_sign_in_link(&token).await.unwrap();
        rotated.pool().close().await;

        // The old key dropped: the new ticket still holds, the old one no longer.
        let after = open(&dir, vec![new_key()], START + 10).await;
        assert!(after.sign_in_links.live_by_ticket(&fresh).await.is_ok());
        assert_eq!(
            after.sign_in_links.live_by_ticket(&ticket).await.err(),
            Some(crate::ErrorCode::SignInLinkInvalid)
        );
    }
}
