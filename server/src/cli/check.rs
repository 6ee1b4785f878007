//! `stepgate check`: is this configuration ready to serve? One line per part (configuration,
//! database, migrations, Redis, key), changing nothing; exit status 1 when any part is broken,
//! so a deploy script or `ExecStartPre=` can stop on it.

use std::process::ExitCode;
use std::time::Duration;

use engine::store::{db, readiness};

/// How long the database or Redis may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// One part's verdict.
enum Verdict {
    Ok(String),
    Broken(String),
    /// Not looked at: a part it depends on is broken, or it is not configured.
    Skipped(String),
}

struct Report {
    broken: bool,
}

impl Report {
    fn line(&mut self, part: &str, verdict: Verdict) {
        let (mark, text) = match verdict {
            Verdict::Ok(text) => ("ok  ", text),
            Verdict::Broken(text) => {
                self.broken = true;
                ("FAIL", text)
            }
            Verdict::Skipped(text) => ("-   ", text),
        };
        println!("{mark} {part}: {}", crate::config::redact_urls(&text));
    }
}

pub async fn run() -> ExitCode {
    let mut report = Report { broken: false };
    let config = match super::load_config() {
        Ok(config) => {
            report.line(
                "configuration",
                Verdict::Ok(format!(
                    "data in {}, public URL {}",
                    config.data_dir.display(),
                    config.public_url
                )),
            );
            config
        }
        Err(e) => {
            report.line("configuration", Verdict::Broken(e.to_string()));
            for part in ["database", "migrations", "redis", "key"] {
                report.line(part, Verdict::Skipped("not looked at".into()));
            }
            return ExitCode::FAILURE;
        }
    };

    let pool = match look_at_database(&config.database_url).await {
        Ok((pool, missing)) => {
            report.line(
                "database",
                Verdict::Ok(format!("answers ({})", config.database_url)),
            );
            let known = readiness::migrations_known(&pool);
            report.line(
                "migrations",
                if missing.is_empty() {
                    Verdict::Ok(format!("{known} of {known} applied"))
                } else {
                    Verdict::Broken(format!(
                        "{} of {known} not applied: run `stepgate migrate` (the server also \
                         applies them when it starts)",
                        missing.len()
                    ))
                },
            );
            Some(pool)
        }
        Err(why) => {
            report.line(
                "database",
                Verdict::Broken(format!("{}: {why}", config.database_url)),
            );
            report.line(
                "migrations",
                Verdict::Skipped("the database did not answer".into()),
            );
            None
        }
    };

    match &config.redis_url {
        None => report.line(
            "redis",
            Verdict::Skipped("not used (STEPGATE_REDIS_URL unset)".into()),
        ),
        Some(url) => {
            let answer = tokio::time::timeout(ANSWER_WITHIN, async {
                let redis = engine::store::redis::Redis::connect(url, &config.redis_prefix).await?;
                readiness::ping(&redis).await
            })
            .await;
            report.line(
                "redis",
                match answer {
                    Ok(Ok(())) => Verdict::Ok(format!("answers ({url})")),
                    Ok(Err(e)) => Verdict::Broken(format!("{url}: {e}")),
                    Err(_) => Verdict::Broken(format!(
                        "{url}: no answer within {}s",
                        ANSWER_WITHIN.as_secs()
                    )),
                },
            );
        }
    }

    match &pool {
        None => report.line(
            "key",
            Verdict::Skipped("the database did not answer".into()),
        ),
        Some(pool) => report.line("key", key_verdict(pool, &config).await),
    }

    if report.broken {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The database, opened as it is, and the migrations it lacks.
async fn look_at_database(url: &str) -> Result<(db::Pool, Vec<i64>), String> {
    let answer = tokio::time::timeout(ANSWER_WITHIN, async {
        let pool = db::open_without_migrating(url)
            .await
            .map_err(|e| e.to_string())?;
        let missing = readiness::missing_migrations(&pool)
            .await
            .map_err(|e| e.to_string())?;
        Ok((pool, missing))
    })
    .await;
    answer.unwrap_or_else(|_| Err(format!("no answer within {}s", ANSWER_WITHIN.as_secs())))
}

async fn key_verdict(pool: &db::Pool, config: &crate::config::Config) -> Verdict {
    use engine::store::key_check::{self, KeyCheckError, KeyLook};
    let secrets = engine::base::crypto::SecretBox::with_keyring(config.key.clone());
    let keys = config.key.keys().len();
    match key_check::look(pool, &secrets).await {
        Ok(KeyLook::Newest) => Verdict::Ok(format!(
            "opens this database ({keys} key{} in the ring)",
            if keys == 1 { "" } else { "s" }
        )),
        Ok(KeyLook::OlderKey) => Verdict::Ok(
            "an older key of the ring opens this database: a rotation is under way (finish it \
             with `stepgate key reseal`)"
                .into(),
        ),
        Ok(KeyLook::NotRecorded) => {
            Verdict::Ok("nothing sealed yet (the first start records this key)".into())
        }
        Err(KeyCheckError::Database(e)) => {
            Verdict::Broken(format!("the key check could not be read: {e}"))
        }
        Err(wrong) => Verdict::Broken(wrong.to_string()),
    }
}
