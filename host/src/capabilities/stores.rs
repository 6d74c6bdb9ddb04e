//! The object stores behind the `storage` capability and the deletion
//! schedule: a local directory or an S3 bucket, and the times both write. Its
//! own module so that `storage` (the WIT interface) and `schedule` (the
//! deletions) both use it and neither imports the other's internals.

use object_store::{path::Path as StorePath, ObjectStore, ObjectStoreExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Why an object store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create storage directory {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot use storage directory {}: {source}", dir.display())]
    UseDir {
        dir: PathBuf,
        source: object_store::Error,
    },
    #[error("storage.s3: cannot use bucket {bucket:?}: {source} (credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")]
    Bucket {
        bucket: String,
        source: object_store::Error,
    },
}

/// A local directory as an object store (created if missing).
pub fn local_store(dir: &std::path::Path) -> Result<Arc<dyn ObjectStore>, StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|source| {
        StoreError::UseDir {
            dir: dir.to_path_buf(),
            source,
        }
    })?;
    Ok(Arc::new(store))
}

/// An S3-compatible bucket as an object store (nothing is contacted yet).
/// Credentials and anything not set in `[storage.s3]` come from the `AWS_*`
/// environment variables. Each request is bounded by `timeout`, retries included.
pub fn s3_store(
    s3: &crate::config::S3Config,
    timeout: std::time::Duration,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    s3_store_with_env(s3, timeout, std::env::vars())
}

/// [`s3_store`] with the `AWS_*` variables taken from `env` (for tests, and for
/// hosts embedding Weir).
pub fn s3_store_with_env(
    s3: &crate::config::S3Config,
    timeout: std::time::Duration,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::{BackoffConfig, ClientOptions, RetryConfig};
    let mut builder = AmazonS3Builder::new();
    for (key, value) in env {
        if key.starts_with("AWS_") {
            if let Ok(k) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(k, value);
            }
        }
    }
    let mut builder = builder
        .with_bucket_name(&s3.bucket)
        .with_virtual_hosted_style_request(!s3.path_style)
        .with_client_options(
            ClientOptions::new()
                .with_timeout(timeout)
                .with_connect_timeout(timeout.min(std::time::Duration::from_secs(5)))
                .with_allow_http(s3.endpoint.starts_with("http://")),
        )
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 2,
            retry_timeout: timeout,
        });
    if !s3.region.is_empty() {
        builder = builder.with_region(&s3.region);
    }
    if !s3.endpoint.is_empty() {
        builder = builder.with_endpoint(&s3.endpoint);
    }
    let store = builder.build().map_err(|source| StoreError::Bucket {
        bucket: s3.bucket.clone(),
        source,
    })?;
    Ok(Arc::new(store))
}

/// Where `[storage]` points, in words, for logs.
pub fn describe_store(config: &crate::config::StorageConfig) -> String {
    match config.backend {
        crate::config::StorageKind::Local => format!("directory {}", config.dir.display()),
        crate::config::StorageKind::S3 => format!(
            "s3 bucket {} at {}",
            config.s3.bucket,
            if config.s3.endpoint.is_empty() {
                "AWS"
            } else {
                &config.s3.endpoint
            }
        ),
    }
}

/// Delete `path`; one already gone is no error.
pub(crate) async fn delete_quietly(
    store: &dyn ObjectStore,
    path: &StorePath,
) -> Result<(), object_store::Error> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The latest due time a deletion may have: the last millisecond of the year
/// 9999 (RFC 3339 has four-digit years).
pub const MAX_DUE_MS: i64 = 253_402_300_799_999;

/// Milliseconds since the epoch as RFC 3339, for reports; a time outside
/// 1970 – 9999 is shown as the nearest end of that range.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms.clamp(0, MAX_DUE_MS) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
