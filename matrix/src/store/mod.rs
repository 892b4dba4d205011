//! The homeserver's storage: SQLite or PostgreSQL through `sqlx`'s `Any` driver.
//!
//! All SQL of the homeserver lives in this module and its children; one file per table group.
//! The schema (`matrix/migrations`) is portable SQL that runs unchanged on both backends, and
//! migrations run forward only at start-up.
//!
//! Writes that take a position in the server's stream go through [`Store::stream_writer`]: the
//! lock is held from the allocation of the position to the commit, so positions become visible
//! in order and a reader that has seen position `n` has seen everything below it.

mod account;
mod backup;
mod changes;
mod device_lists;
mod e2ee;
mod erasure;
mod events;
mod federation;
mod graph;
mod misc;
mod openid;
mod push;
mod relations;
mod rooms;
mod search;
mod server_keys;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, AssertSqlSafe, Executor};
use tokio::sync::{Mutex, MutexGuard, watch};

pub use account::{AccessTokenInfo, DeviceRecord, UserRecord};
pub use backup::{BackedUpKey, BackupVersion, KeyScope};
pub use changes::{Change, ChangeTracker};
pub use device_lists::{DeviceChange, DeviceListEntry, RemoteDeviceList};
pub use e2ee::{OutgoingToDevice, ToDeviceMessage};
pub use events::{
    Direction, EventRow, NewEvent, Redacted, Relation, ResolvedState, Standing, StateChange,
    StateKey, StateMap,
};
pub use federation::{BackfilledRedactions, FEDERATION_QUEUED, NewOutlier, Outgoing};
pub use graph::TopologicalKey;
pub use misc::{MediaRecord, PresenceRecord, ReceiptRecord};
pub use push::{NotificationRow, Pusher};
pub use relations::{RELATION_RECURSION_DEPTH, RelationQuery};
pub use rooms::{MembershipRow, RoomRecord};
pub use search::{SEARCH_FIELDS, SearchHit, SearchQuery, words as search_words};
pub use server_keys::StoredServerKey;

/// A failure of the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    /// Another process holds the right to write this database.
    #[error(
        "another Causeway process is serving this database ({0}); only one process may write \
         it: stop the other one first"
    )]
    InUse(String),
    #[error("cannot open the lock file {path}: {source}")]
    LockFile {
        path: String,
        source: std::io::Error,
    },
}

/// The exclusive right to write a database, held while this lives: on SQLite a lock on a file
/// beside the database, on PostgreSQL a session advisory lock keyed by database and schema on
/// a connection of its own.
pub struct WriterLock {
    _held: WriterLockKind,
}

impl WriterLock {
    /// Lets go of the right to write now (dropping the lock does too, as the connection or
    /// file closes).
    pub async fn release(self) {
        match self._held {
            WriterLockKind::Postgres(connection) => {
                use sqlx::Connection;
                let mut connection = connection
                    .into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // Unlocked before the connection closes: the server ends a closed session
                // in its own time, and the next writer should not have to wait for it.
                let _ = sqlx::query(
                    "SELECT pg_advisory_unlock(hashtext(current_database() || '.' || \
                     current_schema()))",
                )
                .execute(&mut connection)
                .await;
                let _ = connection.close().await;
            }
            WriterLockKind::File(file) => drop(file),
            WriterLockKind::Memory => {}
        }
    }
}

enum WriterLockKind {
    File(std::fs::File),
    /// In a mutex only so that the lock can be shared between threads (it is never used).
    Postgres(std::sync::Mutex<sqlx::AnyConnection>),
    /// An in-memory SQLite database: no other process can see it.
    Memory,
}

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The shared handle to the database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The file of a SQLite database (`None` in memory or on PostgreSQL).
    sqlite_path: Option<PathBuf>,
    stream: Arc<StreamState>,
    tokens: Arc<account::TokenCache>,
    changes: Arc<ChangeTracker>,
    key_counts: Arc<e2ee::KeyCountCache>,
    /// The erased accounts, read once: every reader of events asks about their senders.
    erased: Arc<tokio::sync::OnceCell<std::sync::RwLock<std::collections::HashSet<String>>>>,
    /// The last number given to a state group made by state resolution (they count down
    /// from -1; one process writes the database).
    resolved_groups: Arc<AtomicI64>,
    /// The last negative stream position given to an event stored out of the stream (an
    /// outlier): they count down from -1, so that no reader of the stream sees them as new.
    negative_positions: Arc<AtomicI64>,
    /// Held while the search index is brought up to date.
    search_indexer: Arc<tokio::sync::Mutex<()>>,
}

struct StreamState {
    /// The last position handed out.
    allocated: AtomicI64,
    /// Serialises writers of the stream (see the module documentation).
    writer: Mutex<()>,
    /// The last position whose write has committed.
    visible: watch::Sender<i64>,
}

/// Proof that the caller holds the stream writer lock; hands out positions.
pub struct StreamWriter<'a> {
    _guard: MutexGuard<'a, ()>,
    stream: &'a StreamState,
    last: Option<i64>,
}

impl StreamWriter<'_> {
    /// The next position in the stream.
    pub fn next_position(&mut self) -> i64 {
        let position = self.stream.allocated.fetch_add(1, Ordering::SeqCst) + 1;
        self.last = Some(position);
        position
    }

    /// Makes the positions handed out so far visible to readers. Call after the commit.
    pub fn publish(mut self) {
        if let Some(last) = self.last.take() {
            self.stream.visible.send_replace(last);
        }
    }
}

impl Drop for StreamWriter<'_> {
    fn drop(&mut self) {
        // A writer dropped without publishing has failed its transaction: the positions it took
        // are gaps, which readers never notice. Later positions still become visible.
        if let Some(last) = self.last {
            self.stream.visible.send_if_modified(|visible| {
                if *visible < last {
                    *visible = last;
                    true
                } else {
                    false
                }
            });
        }
    }
}

impl Store {
    /// Connects, applies pending migrations and reads the stream position.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        if backend == Backend::Sqlite {
            create_sqlite_parent(url)?;
        }
        let options: AnyConnectOptions = url.parse()?;
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            pool_options = pool_options.after_connect(|connection, _| {
                Box::pin(async move {
                    // WAL with synchronous=NORMAL keeps every committed transaction across a
                    // crash of the process; foreign writers wait instead of failing.
                    // A 512 KiB page cache per connection: the hot data is small, and the
                    // operating system caches the file as well.
                    connection
                        .execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                             PRAGMA cache_size = -512;",
                        )
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options.connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        let hashed = account::hash_stored_tokens(&pool).await?;
        if hashed > 0 {
            tracing::info!(
                tokens = hashed,
                "stored access tokens are kept as hashes from now on"
            );
        }
        let position = max_stream_position(&pool).await?;
        let lowest_group: i64 =
            sqlx::query_scalar("SELECT COALESCE(MIN(state_group), 0) FROM state_groups")
                .fetch_one(&pool)
                .await?;
        let lowest_position: i64 =
            sqlx::query_scalar("SELECT COALESCE(MIN(stream_ordering), 0) FROM events")
                .fetch_one(&pool)
                .await?;
        Ok(Store {
            pool,
            backend,
            sqlite_path: (backend == Backend::Sqlite)
                .then(|| sqlite_file(url))
                .flatten(),
            stream: Arc::new(StreamState {
                allocated: AtomicI64::new(position),
                writer: Mutex::new(()),
                visible: watch::channel(position).0,
            }),
            tokens: Arc::default(),
            changes: Arc::new(ChangeTracker::new(position)),
            key_counts: Arc::default(),
            erased: Arc::default(),
            resolved_groups: Arc::new(AtomicI64::new(lowest_group.min(0))),
            negative_positions: Arc::new(AtomicI64::new(lowest_position.min(0))),
            search_indexer: Arc::default(),
        })
    }

    /// A new number for a state group made by state resolution.
    pub(crate) fn allocate_state_group(&self) -> i64 {
        self.resolved_groups.fetch_sub(1, Ordering::SeqCst) - 1
    }

    /// A new negative stream position, for an event stored out of the stream.
    pub(crate) fn allocate_negative_position(&self) -> i64 {
        self.negative_positions.fetch_sub(1, Ordering::SeqCst) - 1
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Takes the exclusive right to write the database, or fails at once with
    /// [`StoreError::InUse`] when another process holds it. `causeway serve` holds it while it
    /// runs, so that a second server on the same database refuses to start.
    pub async fn lock_writer(&self) -> Result<WriterLock, StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let Some(database) = &self.sqlite_path else {
                    return Ok(WriterLock {
                        _held: WriterLockKind::Memory,
                    });
                };
                let mut path = database.clone().into_os_string();
                path.push(".lock");
                let path = PathBuf::from(path);
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|source| StoreError::LockFile {
                        path: path.display().to_string(),
                        source,
                    })?;
                match file.try_lock() {
                    Ok(()) => Ok(WriterLock {
                        _held: WriterLockKind::File(file),
                    }),
                    Err(std::fs::TryLockError::WouldBlock) => {
                        Err(StoreError::InUse(database.display().to_string()))
                    }
                    Err(std::fs::TryLockError::Error(source)) => Err(StoreError::LockFile {
                        path: path.display().to_string(),
                        source,
                    }),
                }
            }
            Backend::Postgres => {
                let mut connection = self.pool.acquire().await?.detach();
                let (locked, place): (bool, String) = sqlx::query_as(
                    "SELECT pg_try_advisory_lock(hashtext(current_database() || '.' || \
                     current_schema())), current_database() || '.' || current_schema()",
                )
                .fetch_one(&mut connection)
                .await?;
                if !locked {
                    return Err(StoreError::InUse(format!("PostgreSQL {place}")));
                }
                Ok(WriterLock {
                    _held: WriterLockKind::Postgres(std::sync::Mutex::new(connection)),
                })
            }
        }
    }

    /// The connections to the database, for the parts of the server that keep tables of their
    /// own in it (the bridge), with their own migrations and SQL.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a transaction that writes. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a transaction that read first and wrote later would fail with
    /// `SQLITE_BUSY_SNAPSHOT` whenever another connection wrote in between, which waiting
    /// cannot cure.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// What changed at which position (see [`ChangeTracker`]).
    pub fn changes(&self) -> &ChangeTracker {
        &self.changes
    }

    /// Takes the stream writer lock.
    pub async fn stream_writer(&self) -> StreamWriter<'_> {
        StreamWriter {
            _guard: self.stream.writer.lock().await,
            stream: &self.stream,
            last: None,
        }
    }

    /// The last position whose write is visible.
    pub fn current_position(&self) -> i64 {
        *self.stream.visible.borrow()
    }

    /// A receiver that changes whenever a new position becomes visible.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.stream.visible.subscribe()
    }

    #[cfg(test)]
    async fn max_stream_position(&self) -> Result<i64, StoreError> {
        max_stream_position(&self.pool).await
    }
}

/// The highest position any table holds: where the stream continues after a start.
async fn max_stream_position(pool: &AnyPool) -> Result<i64, StoreError> {
    let mut max = 0;
    for table in [
        "events",
        "account_data",
        "receipts",
        "presence",
        "device_list_updates",
        "to_device_messages",
    ] {
        let query = format!("SELECT COALESCE(MAX(stream_ordering), 0) FROM {table}");
        let value: i64 = sqlx::query_scalar(AssertSqlSafe(query))
            .fetch_one(pool)
            .await?;
        max = max.max(value);
    }
    Ok(max)
}

/// The file of a SQLite database URL, if it names one.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

fn create_sqlite_parent(url: &str) -> Result<(), StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::DataDir {
            path: parent.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Store;

    /// A store for a test: a fresh SQLite file, or a fresh schema on the PostgreSQL named by
    /// `CAUSEWAY_TEST_POSTGRES_URL` when `postgres` is asked for.
    pub struct TestStore {
        pub store: Store,
        _dir: Option<tempfile::TempDir>,
    }

    pub async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}/test.sqlite3?mode=rwc", dir.path().display());
        TestStore {
            store: Store::connect(&url, 4).await.expect("sqlite store"),
            _dir: Some(dir),
        }
    }

    /// A PostgreSQL store in a schema of its own, or `None` when no server is configured.
    pub async fn postgres() -> Option<TestStore> {
        let base = std::env::var("CAUSEWAY_TEST_POSTGRES_URL").ok()?;
        use sqlx::Executor;
        sqlx::any::install_default_drivers();
        let schema = format!(
            "causeway_test_{}_{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let admin = sqlx::AnyPool::connect(&base)
            .await
            .expect("postgres reachable");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .await
            .expect("create schema");
        admin.close().await;
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
        Some(TestStore {
            store: Store::connect(&url, 4).await.expect("postgres store"),
            _dir: None,
        })
    }

    /// Runs a storage test against SQLite and, when configured, PostgreSQL.
    macro_rules! both_backends {
        ($name:ident, $body:expr) => {
            mod $name {
                use super::*;
                #[tokio::test]
                async fn sqlite() {
                    let test = $crate::store::testing::sqlite().await;
                    ($body)(test.store.clone()).await;
                }
                #[tokio::test]
                async fn postgres() {
                    let Some(test) = $crate::store::testing::postgres().await else {
                        eprintln!("CAUSEWAY_TEST_POSTGRES_URL not set: PostgreSQL run skipped");
                        return;
                    };
                    ($body)(test.store.clone()).await;
                }
            }
        };
    }
    pub(crate) use both_backends;
}
