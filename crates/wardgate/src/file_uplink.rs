//! The `type = "file"` uplink: normalized JSON lines appended to a file or written to stdout.
//! It is the embedded default, so a first run shows readings with no broker at all.
//!
//! A reading is acknowledged to the outbox once its line is written and flushed (and fsynced
//! when configured), so a crash between write and ack repeats lines, never loses them.

use std::path::PathBuf;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use wardgate_config::FileUplinkConfig;
use wardgate_core::{HealthReporter, MessageClass, OutboxCursor, Shutdown};

/// Most readings taken from the outbox per write.
const BATCH: usize = 512;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UplinkLabel {
    uplink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    uplink: String,
    class: &'static str,
}

/// Counters of the file uplinks.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileUplinkMetrics {
    written: Family<ClassLabel, Counter>,
    errors: Family<UplinkLabel, Counter>,
}

impl FileUplinkMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "wardgate_uplink_file_readings",
            "Readings written by file/stdout uplinks",
            m.written.clone(),
        );
        registry.register(
            "wardgate_uplink_file_write_errors",
            "Failed writes of file/stdout uplinks (the batch is retried)",
            m.errors.clone(),
        );
        m
    }
}

/// A configured file uplink, not yet running.
#[derive(Debug)]
pub(crate) struct FileUplink {
    cfg: FileUplinkConfig,
    metrics: FileUplinkMetrics,
    health: HealthReporter,
}

impl FileUplink {
    pub(crate) fn new(
        cfg: FileUplinkConfig,
        metrics: FileUplinkMetrics,
        health: HealthReporter,
    ) -> Self {
        FileUplink {
            cfg,
            metrics,
            health,
        }
    }

    /// Drains the cursor into the file until shutdown.
    pub(crate) async fn run<C: OutboxCursor>(self, mut cursor: C, shutdown: Shutdown) {
        let label = UplinkLabel {
            uplink: self.cfg.name.clone(),
        };
        let stdout = self.cfg.path.as_os_str() == "-";
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            // `sync` is a second handle on the same open file, used for fsync through the
            // type-erased writer.
            let (sink, sync): (Box<dyn AsyncWrite + Send + Unpin>, Option<tokio::fs::File>) =
                if stdout {
                    (Box::new(tokio::io::stdout()), None)
                } else {
                    match open_append(&self.cfg.path).await {
                        Ok(f) => {
                            let sync = if self.cfg.fsync {
                                Some(f.try_clone().await)
                            } else {
                                None
                            };
                            match sync.transpose() {
                                Ok(sync) => {
                                    (Box::new(f) as Box<dyn AsyncWrite + Send + Unpin>, sync)
                                }
                                Err(e) => {
                                    tracing::error!(uplink = %self.cfg.name, error = %e, "file uplink cannot duplicate its file handle");
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            self.health
                                .not_ready(format!("cannot open {}: {e}", self.cfg.path.display()));
                            tracing::error!(uplink = %self.cfg.name, path = %self.cfg.path.display(), error = %e, "file uplink cannot open its file");
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                () = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                            continue;
                        }
                    }
                };
            let where_to = if stdout {
                "stdout".to_owned()
            } else {
                self.cfg.path.display().to_string()
            };
            self.health.ready(format!("writing to {where_to}"));
            let mut out = BufWriter::with_capacity(64 * 1024, sink);
            let result = self
                .pump(&mut cursor, &mut out, sync.as_ref(), &shutdown, &label)
                .await;
            match result {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.errors.get_or_create(&label).inc();
                    self.health.not_ready(format!("write failed: {e}"));
                    tracing::error!(uplink = %self.cfg.name, error = %e, "file uplink write failed; retrying the batch");
                    cursor.rewind();
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
    }

    async fn pump<C: OutboxCursor, W: AsyncWrite + Unpin>(
        &self,
        cursor: &mut C,
        out: &mut BufWriter<W>,
        sync: Option<&tokio::fs::File>,
        shutdown: &Shutdown,
        label: &UplinkLabel,
    ) -> std::io::Result<()> {
        loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                b = cursor.next(BATCH) => b,
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::info!(uplink = %self.cfg.name, reason = %e, "file uplink stops: outbox closed");
                    return Ok(());
                }
            };
            let mut seqs = Vec::with_capacity(batch.len());
            let mut per_class = [0u64; MessageClass::ALL.len()];
            for d in &batch {
                out.write_all(&d.json).await?;
                out.write_all(b"\n").await?;
                seqs.push(d.seq);
                if let Some(i) = MessageClass::ALL.iter().position(|c| *c == d.class) {
                    per_class[i] += 1;
                }
            }
            out.flush().await?;
            if let Some(f) = sync {
                f.sync_data().await?;
            }
            for (class, n) in MessageClass::ALL.iter().zip(per_class) {
                if n > 0 {
                    self.metrics
                        .written
                        .get_or_create(&ClassLabel {
                            uplink: label.uplink.clone(),
                            class: class.as_str(),
                        })
                        .inc_by(n);
                }
            }
            cursor.ack(&seqs);
        }
    }
}

async fn open_append(path: &PathBuf) -> std::io::Result<tokio::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}
