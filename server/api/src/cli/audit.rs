//! `cairn audit ...`: verify the ledger's hash chains, publish and check signed checkpoints,
//! export and verify offline proof bundles, purge with a reason.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use cairn_audit::checkpoint::{self, CheckpointSigner};
use cairn_audit::transparency::{Transparency, check_tree_against, verify_bundle};
use cairn_audit::{Actor, Ledger, LedgerOptions, PurgeRequest, RunId, TenantId};
use chrono::{DateTime, Utc};
use clap::Subcommand;

/// `cairn audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every hash chain; print OK with counts, or the first broken link (and
    /// exit 1). With `--checkpoint`, also prove the ledger consistent with a signed
    /// checkpoint kept earlier (its first N seals unchanged, none removed).
    Verify {
        /// The ledger: `postgres://...` or `sqlite:PATH` (default: the embedded SQLite
        /// ledger under `CAIRN_DATA_DIR`).
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Only this tenant (default: every tenant; the checkpoint's with `--checkpoint`).
        #[arg(long)]
        tenant: Option<String>,
        /// Only runs started at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        /// Only runs started before this time (RFC 3339).
        #[arg(long)]
        to: Option<DateTime<Utc>>,
        /// A signed checkpoint file kept earlier.
        #[arg(long, requires = "key")]
        checkpoint: Option<PathBuf>,
        /// Verifier key (`name+id+base64`, or a file holding one); repeat during a
        /// rotation.
        #[arg(long)]
        key: Vec<String>,
    },
    /// Run the ledger's migrations, as the owner role (the server's writer role cannot),
    /// and print the grants for the other roles.
    Migrate {
        /// The ledger, as its owner.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Print the grants for these role names: owner, writer, reader, retention.
        #[arg(long, num_args = 4, value_names = ["OWNER", "WRITER", "READER", "RETENTION"])]
        roles: Option<Vec<String>>,
        /// The minimum retention, in days, the grants make the database enforce.
        #[arg(long, default_value_t = 30)]
        min_retention_days: u32,
    },
    /// Make a checkpoint signing key pair: writes the private key to `--out` (mode 0600)
    /// and prints the verifier key to give auditors.
    Keygen {
        /// The key name, which prefixes every checkpoint's origin (e.g.
        /// `cairn.example.com/audit`).
        #[arg(long)]
        name: String,
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign and publish a checkpoint of a tenant's tree now; prints it.
    Checkpoint {
        /// The ledger.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The signing key file (or `CAIRN_CHECKPOINT_KEY`).
        #[arg(long, env = "CAIRN_CHECKPOINT_KEY_FILE")]
        key_file: Option<PathBuf>,
    },
    /// Write a run's offline proof bundle: its steps, seals, inclusion proofs and a
    /// signed checkpoint, in one file.
    Export {
        /// The run to bundle.
        #[arg(long)]
        bundle: String,
        /// The run's tenant.
        #[arg(long)]
        tenant: String,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        /// The ledger.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// The signing key file, used when no published checkpoint covers the run yet.
        #[arg(long, env = "CAIRN_CHECKPOINT_KEY_FILE")]
        key_file: Option<PathBuf>,
    },
    /// Check a proof bundle with no database: signature, steps, seals, inclusion proofs.
    VerifyBundle {
        /// The bundle file.
        file: PathBuf,
        /// Verifier key (`name+id+base64`, or a file holding one); repeatable.
        #[arg(long, required = true)]
        key: Vec<String>,
    },
    /// Purge a tenant's runs sealed before a cutoff, recording who and why (connect as
    /// the retention role).
    Purge {
        /// The ledger, as the retention role.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Remove runs sealed before this time (RFC 3339).
        #[arg(long)]
        cutoff: DateTime<Utc>,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// Who asks (recorded), e.g. `user:olga`.
        #[arg(long)]
        actor: String,
        /// The minimum retention in days this purge must respect.
        #[arg(long, default_value_t = 30)]
        min_retention_days: u32,
    },
}

/// Opens the ledger without migrating: nothing here may change the schema.
async fn open(database_url: Option<String>) -> anyhow::Result<Arc<dyn Ledger>> {
    let url = database_url.unwrap_or_else(super::default_database_url);
    let options = LedgerOptions {
        migrate: false,
        ..LedgerOptions::default()
    };
    cairn_audit::open(&url, options)
        .await
        .with_context(|| format!("cannot open the ledger at {}", redact(&url)))
}

fn tenant(t: &str) -> anyhow::Result<TenantId> {
    TenantId::parse(t).with_context(|| format!("--tenant `{t}`"))
}

/// A verifier key given inline, or the contents of the file it names.
fn verifier_key(k: &str) -> anyhow::Result<String> {
    if k.contains('+') {
        Ok(k.trim().to_owned())
    } else {
        Ok(std::fs::read_to_string(k)
            .with_context(|| format!("--key {k}: neither a key nor a readable file"))?
            .trim()
            .to_owned())
    }
}

fn signer(key_file: Option<PathBuf>) -> anyhow::Result<Option<CheckpointSigner>> {
    let key = match (std::env::var("CAIRN_CHECKPOINT_KEY").ok(), key_file) {
        (Some(k), _) => k,
        (None, Some(f)) => std::fs::read_to_string(&f)
            .with_context(|| format!("reading the signing key {}", f.display()))?,
        (None, None) => return Ok(None),
    };
    Ok(Some(CheckpointSigner::from_key(&key)?))
}

/// Runs one `cairn audit` command.
pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            database_url,
            tenant: t,
            from,
            to,
            checkpoint: kept,
            key,
        } => {
            let mut t = t.map(|t| tenant(&t)).transpose()?;
            let ledger = open(database_url).await?;
            if let Some(path) = kept {
                let keys = key
                    .iter()
                    .map(|k| verifier_key(k))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let cp = checkpoint::verify(&text, &keys, None)?;
                let cp_tenant = tenant(cp.origin.rsplit('/').next().unwrap_or_default())?;
                if t.as_ref().is_some_and(|t| *t != cp_tenant) {
                    anyhow::bail!("the checkpoint is for tenant {cp_tenant}, not --tenant");
                }
                let server = Transparency::new(ledger.clone(), None);
                let tree = server.tree(&cp_tenant).await?;
                if let Err(e) = check_tree_against(&tree, cp.size, &cp.root) {
                    println!("BROKEN against the checkpoint {}: {e}", path.display());
                    return Ok(ExitCode::FAILURE);
                }
                println!(
                    "OK: the ledger's first {} seals of {cp_tenant} match the checkpoint ({} seals now)",
                    cp.size,
                    tree.size()
                );
                t = Some(cp_tenant);
            }
            let report = ledger.verify(t.as_ref(), from, to).await?;
            println!("{report}");
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::Migrate {
            database_url,
            roles,
            min_retention_days,
        } => {
            let url = database_url.unwrap_or_else(super::default_database_url);
            cairn_audit::open(&url, LedgerOptions::default())
                .await
                .with_context(|| format!("migrating the ledger at {}", redact(&url)))?;
            eprintln!("migrated {}", redact(&url));
            if let Some(r) = roles {
                let names = cairn_audit::roles::RoleNames {
                    owner: r[0].clone(),
                    writer: r[1].clone(),
                    reader: r[2].clone(),
                    retention: r[3].clone(),
                };
                print!("{}", names.grant_sql(min_retention_days));
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Keygen { name, out } => {
            let (secret, public) = checkpoint::generate_key(&name);
            write_private(&out, &secret)?;
            println!("{public}");
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint {
            database_url,
            tenant: t,
            key_file,
        } => {
            let t = tenant(&t)?;
            let signer = signer(key_file)?
                .context("a signing key is needed: --key-file or CAIRN_CHECKPOINT_KEY")?;
            let server = Transparency::new(open(database_url).await?, Some(signer));
            print!("{}", server.publish(&t).await?.note);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export {
            bundle,
            tenant: t,
            out,
            database_url,
            key_file,
        } => {
            let t = tenant(&t)?;
            let run = RunId::parse(&bundle).with_context(|| format!("--bundle `{bundle}`"))?;
            let server = Transparency::new(open(database_url).await?, signer(key_file)?);
            let b = server.bundle(&t, run).await?;
            std::fs::write(&out, serde_json::to_vec_pretty(&b)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {} ({} steps)", out.display(), b.steps.len());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::VerifyBundle { file, key } => {
            let keys = key
                .iter()
                .map(|k| verifier_key(k))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            match verify_bundle(&bytes, &keys) {
                Ok(report) => {
                    println!("{report}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("BROKEN: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Purge {
            database_url,
            tenant: t,
            cutoff,
            reason,
            actor,
            min_retention_days,
        } => {
            let request = PurgeRequest {
                tenant: tenant(&t)?,
                cutoff,
                actor: Actor::parse(&actor).with_context(|| format!("--actor `{actor}`"))?,
                reason,
                min_retention: chrono::Duration::days(min_retention_days.into()),
            };
            let report = open(database_url).await?.purge(&request).await?;
            println!(
                "purged {} runs, {} steps (record {} of {})",
                report.runs_purged, report.steps_purged, report.seal_seq, report.tenant
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes a private key readable by its owner only.
fn write_private(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    writeln!(f, "{secret}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Hides a password in a database URL before it is printed.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
