//! The configuration file: one YAML document, validated at start with the offending key named.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The whole configuration of `segment-cache`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the S3 endpoint Milvus talks to (`minio.address`/`minio.port`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The credentials Milvus signs its requests with (`minio.accessKeyID`/`secretAccessKey`).
    pub auth: AuthConfig,
    /// The real S3 bucket behind the cache.
    pub upstream: UpstreamConfig,
    /// The cache directory and its byte budget.
    pub cache: CacheConfig,
    /// What to warm and how fast.
    #[serde(default)]
    pub warm: WarmConfig,
    /// Where `serve` exposes `/metrics`, `/healthz` and `/readyz`.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Segment-aware read-ahead of a read miss's segment.
    #[serde(default)]
    pub read_ahead: ReadAheadConfig,
}

/// Segment-aware read-ahead: the first read miss of a Milvus segment's file lists the segment's
/// other files and fetches them in the background (see [`crate::readahead`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadAheadConfig {
    /// On by default: the sidecar runs beside query nodes, which read a segment's files together.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Read-ahead fetches in flight across all segments (1..=1024).
    #[serde(default = "default_read_ahead_concurrent")]
    pub max_concurrent: usize,
    /// Bytes read ahead per segment group at most (smallest files first).
    #[serde(default = "default_read_ahead_bytes")]
    pub max_bytes_per_segment: ByteSize,
    /// Which insert logs (per-field binlogs) are read ahead: `learned` (default), those of
    /// fields Milvus read in the collection within `field_memory`, the others on its first read
    /// of them; `all`, every field's.
    #[serde(default)]
    pub fields: ReadAheadFields,
    /// How long a field counts as read after Milvus's last read of one of its insert logs.
    #[serde(default = "default_field_memory", with = "humantime_serde")]
    pub field_memory: Duration,
}

/// Which insert logs of a segment read-ahead fetches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadAheadFields {
    /// Those of fields Milvus has been reading (an indexed field's raw binlogs are not read).
    #[default]
    Learned,
    /// Every field's.
    All,
}

fn default_field_memory() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_read_ahead_concurrent() -> usize {
    8
}
fn default_read_ahead_bytes() -> ByteSize {
    ByteSize(2 << 30)
}

impl Default for ReadAheadConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_concurrent: default_read_ahead_concurrent(),
            max_bytes_per_segment: default_read_ahead_bytes(),
            fields: ReadAheadFields::default(),
            field_memory: default_field_memory(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000))
}

/// A secret from the configuration: its `Debug` prints `<redacted>`, so no derived `Debug` of a
/// config type (nor a log line of one) can show it; [`Secret::expose`] is the one way to read it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that signs or checks with it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret was given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// SigV4 credentials that clients of the cache must sign with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Access key id.
    pub access_key: String,
    /// Secret access key; may instead come from `SEGMENT_CACHE_SECRET_KEY` (or `--secret-key`).
    #[serde(default)]
    pub secret_key: Secret,
}

/// The upstream S3 service and bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Endpoint URL; empty means the AWS default for the region.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// AWS region.
    #[serde(default = "default_region")]
    pub region: String,
    /// The bucket Milvus uses (`minio.bucketName`); requests for other buckets are refused.
    pub bucket: String,
    /// Path-style addressing (`http://host/bucket/key`); default true when `endpoint_url` is set.
    #[serde(default)]
    pub force_path_style: Option<bool>,
    /// Static credentials for the upstream; by default the standard AWS chain (env, IRSA, profile, IMDS).
    #[serde(default)]
    pub access_key: Option<String>,
    /// Secret for `access_key`.
    #[serde(default)]
    pub secret_key: Option<Secret>,
    /// Timeout of one upstream attempt (connect + first byte).
    #[serde(default = "default_upstream_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per upstream call site: the budget of [`crate::retry::RetryPolicy`].
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_attempts() -> u32 {
    crate::retry::DEFAULT_ATTEMPTS
}

/// The cache directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Directory on the NVMe mount; created if missing.
    pub dir: PathBuf,
    /// Byte budget: a size (`400GiB`, `500MB`, `1048576`) or a share of the filesystem holding
    /// `dir` (`90%`, the default); resolved and checked against the filesystem at start.
    #[serde(default)]
    pub capacity: Capacity,
    /// Objects larger than this are not cached (passed through); default: the capacity.
    #[serde(default)]
    pub max_object_size: Option<ByteSize>,
    /// Re-check the upstream ETag of a cached object when it was last checked longer ago than this;
    /// `0s` (default) never revalidates: Milvus segment and index files are immutable.
    #[serde(default = "default_revalidate", with = "humantime_serde")]
    pub revalidate_after: Duration,
    /// Keep an access log of keys read (`access.log` in `dir`), used by the warmer.
    #[serde(default = "default_true")]
    pub access_log: bool,
    /// Largest size the access log may grow to before it is compacted.
    #[serde(default = "default_access_log_max")]
    pub access_log_max: ByteSize,
    /// A read miss of an object of at least two of these is fetched in parts of this size, in
    /// parallel; `0` fetches every miss with one GET.
    #[serde(default = "default_part_size")]
    pub miss_part_size: ByteSize,
    /// Part requests in flight across all read misses.
    #[serde(default = "default_miss_concurrency")]
    pub miss_concurrency: usize,
}

fn default_revalidate() -> Duration {
    Duration::ZERO
}
fn default_true() -> bool {
    true
}
fn default_miss_concurrency() -> usize {
    16
}
fn default_access_log_max() -> ByteSize {
    ByteSize(64 << 20)
}

/// Warm settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmConfig {
    /// Key prefixes to warm, e.g. `files/index_files/`.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// A file with one key per line to warm.
    #[serde(default)]
    pub key_list: Option<PathBuf>,
    /// Warm the keys of the access log (what this node read before), most recent first.
    #[serde(default = "default_true")]
    pub from_access_log: bool,
    /// Parallel ranged requests in flight.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Objects at least this big are fetched in parallel ranges of `part_size`.
    #[serde(default = "default_part_size")]
    pub part_size: ByteSize,
    /// Run a warm in the background of `serve`.
    #[serde(default = "default_true")]
    pub in_serve: bool,
    /// `/readyz` answers 503 until the background warm is done.
    #[serde(default)]
    pub ready_after_warm: bool,
}

fn default_concurrency() -> usize {
    32
}
fn default_part_size() -> ByteSize {
    ByteSize(8 << 20)
}

impl Default for WarmConfig {
    fn default() -> Self {
        Self {
            prefixes: Vec::new(),
            key_list: None,
            from_access_log: true,
            concurrency: default_concurrency(),
            part_size: default_part_size(),
            in_serve: true,
            ready_after_warm: false,
        }
    }
}

/// Telemetry endpoint settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_telemetry_listen")]
    pub listen: SocketAddr,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            listen: default_telemetry_listen(),
        }
    }
}

fn default_telemetry_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9101))
}

/// A byte count written as a number with an optional unit (`B`, `KB`, `KiB`, `MB`, `MiB`, ... `TiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        let mult: u64 = match unit {
            "" | "B" => 1,
            "KB" | "kB" | "K" => 1000,
            "MB" | "M" => 1000_u64.pow(2),
            "GB" | "G" => 1000_u64.pow(3),
            "TB" | "T" => 1000_u64.pow(4),
            "KiB" | "Ki" => 1 << 10,
            "MiB" | "Mi" => 1 << 20,
            "GiB" | "Gi" => 1 << 30,
            "TiB" | "Ti" => 1 << 40,
            _ => {
                return Err(format!(
                    "expected a byte size like 800GiB or 500MB, unknown unit {unit:?} in {s:?}"
                ));
            }
        };
        if num.is_empty() {
            return Err(format!("expected a byte size like 800GiB, found {s:?}"));
        }
        if let Ok(n) = num.parse::<u64>() {
            return n
                .checked_mul(mult)
                .map(ByteSize)
                .ok_or_else(|| format!("byte size {s:?} is too large"));
        }
        let f: f64 = num
            .parse()
            .map_err(|_| format!("expected a byte size like 800GiB, found {s:?}"))?;
        #[allow(clippy::cast_precision_loss)]
        let v = f * mult as f64;
        if !v.is_finite() || !(0.0..=1.8e19).contains(&v) {
            return Err(format!("byte size {s:?} is out of range"));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(ByteSize(v as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `cache.capacity`: a byte budget, or a whole percentage of the filesystem that holds
/// `cache.dir` (so one configuration fits every instance type's NVMe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// This many bytes.
    Bytes(ByteSize),
    /// This percentage (1..=100) of the filesystem's total size.
    Percent(u8),
}

/// The default budget: 90 % of the filesystem. The other 10 % is for what the budget does not
/// count: the filesystem's own metadata and reserved blocks, `index.json`, `access.log` (up to
/// `cache.access_log_max`), and the `.meta` files (one block per object).
pub const DEFAULT_CAPACITY_PERCENT: u8 = 90;

impl Default for Capacity {
    fn default() -> Self {
        Capacity::Percent(DEFAULT_CAPACITY_PERCENT)
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capacity::Bytes(b) => write!(f, "{} bytes", b.0),
            Capacity::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl FromStr for Capacity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<u8>() {
                Ok(n @ 1..=100) => Ok(Capacity::Percent(n)),
                _ => Err(format!(
                    "expected a whole percentage of the filesystem from 1% to 100%, found {s:?}"
                )),
            };
        }
        s.parse::<ByteSize>()
            .map(Capacity::Bytes)
            .map_err(|e| format!("{e}, or a percentage of the filesystem like 90%"))
    }
}

impl<'de> Deserialize<'de> for Capacity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Capacity::Bytes(ByteSize(n))),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Bytes as GiB with one decimal, for messages.
fn gib(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let g = n as f64 / f64::from(1_u32 << 30);
    format!("{g:.1} GiB")
}

impl Capacity {
    /// The byte budget on a filesystem of `fs_total` bytes; a byte size above `fs_total` is an
    /// error (the budget would never be reached: eviction would never start, and writes would
    /// fail with ENOSPC instead).
    pub fn resolve(self, fs_total: u64) -> Result<u64, String> {
        match self {
            Capacity::Bytes(ByteSize(b)) if b > fs_total => Err(format!(
                "configured {b} bytes ({}) is more than the filesystem's total size of {fs_total} \
                 bytes ({}); use a percentage like {DEFAULT_CAPACITY_PERCENT}% or a smaller size",
                gib(b),
                gib(fs_total)
            )),
            Capacity::Bytes(ByteSize(b)) => Ok(b),
            Capacity::Percent(p) => {
                let b = u128::from(fs_total) * u128::from(p) / 100;
                Ok(u64::try_from(b).unwrap_or(u64::MAX))
            }
        }
    }
}

/// Total size in bytes of the filesystem that holds `path`, or (for a path not created yet) its
/// nearest existing ancestor.
pub fn filesystem_size(path: &Path) -> std::io::Result<u64> {
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => {
                p = Path::new(".");
                break;
            }
        }
    }
    let st = rustix::fs::statvfs(p).map_err(std::io::Error::from)?;
    Ok(st.f_blocks.saturating_mul(st.f_frsize))
}

pub use yaml_config::ConfigError;

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config = Self::load_unvalidated(path)?;
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    /// Reads the file at `path` without the cross-field checks (call [`Config::validate`] after
    /// applying flags and environment overrides).
    pub fn load_unvalidated(path: &Path) -> Result<Config, ConfigError> {
        yaml_config::read(path)
    }

    /// Parses and validates YAML `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let config: Config = yaml_config::parse(text, file)?;
        config.validate(file)?;
        Ok(config)
    }

    /// Checks cross-field rules; called by `parse` and again after flags override fields.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |path: &str, message: String| ConfigError::Invalid {
            file: file.to_string(),
            path: path.to_string(),
            message,
        };
        if self.auth.access_key.is_empty() {
            return Err(bad("auth.access_key", "must not be empty".into()));
        }
        if self.auth.secret_key.is_empty() {
            return Err(bad(
                "auth.secret_key",
                "must not be empty (set it here or in SEGMENT_CACHE_SECRET_KEY)".into(),
            ));
        }
        if !is_bucket_name(&self.upstream.bucket) {
            return Err(bad(
                "upstream.bucket",
                format!(
                    "expected an S3 bucket name (3-63 of a-z 0-9 . -), found {:?}",
                    self.upstream.bucket
                ),
            ));
        }
        if let Some(url) = &self.upstream.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(bad(
                "upstream.endpoint_url",
                format!("expected an http:// or https:// URL, found {url:?}"),
            ));
        }
        if self.upstream.region.is_empty() {
            return Err(bad("upstream.region", "must not be empty".into()));
        }
        if self.upstream.access_key.is_some() != self.upstream.secret_key.is_some() {
            return Err(bad(
                "upstream.access_key",
                "set both upstream.access_key and upstream.secret_key, or neither".into(),
            ));
        }
        if self.upstream.max_attempts == 0 {
            return Err(bad("upstream.max_attempts", "must be at least 1".into()));
        }
        if self.cache.capacity == Capacity::Bytes(ByteSize(0)) {
            return Err(bad("cache.capacity", "must be more than 0 bytes".into()));
        }
        if self.cache.dir.as_os_str().is_empty() {
            return Err(bad("cache.dir", "must not be empty".into()));
        }
        if let (Some(m), Capacity::Bytes(c)) = (self.cache.max_object_size, self.cache.capacity)
            && m > c
        {
            return Err(bad(
                "cache.max_object_size",
                format!(
                    "must not exceed cache.capacity ({} bytes), found {} bytes",
                    c.0, m.0
                ),
            ));
        }
        if self.warm.concurrency == 0 || self.warm.concurrency > 1024 {
            return Err(bad(
                "warm.concurrency",
                format!("expected 1..=1024, found {}", self.warm.concurrency),
            ));
        }
        if self.cache.miss_concurrency == 0 || self.cache.miss_concurrency > 1024 {
            return Err(bad(
                "cache.miss_concurrency",
                format!("expected 1..=1024, found {}", self.cache.miss_concurrency),
            ));
        }
        if self.cache.miss_part_size.0 != 0 && self.cache.miss_part_size.0 < (1 << 20) {
            return Err(bad(
                "cache.miss_part_size",
                format!(
                    "expected 0 (off) or at least 1MiB, found {} bytes",
                    self.cache.miss_part_size.0
                ),
            ));
        }
        if self.read_ahead.max_concurrent == 0 || self.read_ahead.max_concurrent > 1024 {
            return Err(bad(
                "read_ahead.max_concurrent",
                format!(
                    "expected 1..=1024, found {}",
                    self.read_ahead.max_concurrent
                ),
            ));
        }
        if self.warm.part_size.0 < (1 << 20) {
            return Err(bad(
                "warm.part_size",
                format!(
                    "expected at least 1MiB, found {} bytes",
                    self.warm.part_size.0
                ),
            ));
        }
        for (i, p) in self.warm.prefixes.iter().enumerate() {
            if p.len() > 1024 {
                return Err(bad(
                    &format!("warm.prefixes[{i}]"),
                    "longer than 1024 bytes".into(),
                ));
            }
        }
        Ok(())
    }

    /// Largest object the cache keeps, with the byte budget resolved to `capacity`.
    #[must_use]
    pub fn max_object_size(&self, capacity: u64) -> u64 {
        self.cache
            .max_object_size
            .map_or(capacity, |m| m.0.min(capacity))
    }

    /// `cache.capacity` in bytes on a filesystem of `fs_total` bytes; an error names
    /// `cache.capacity`, what was configured and the filesystem's size (`file` names the file).
    pub fn capacity_on(&self, fs_total: u64, file: &str) -> Result<u64, ConfigError> {
        self.cache
            .capacity
            .resolve(fs_total)
            .map_err(|message| ConfigError::Invalid {
                file: file.to_string(),
                path: "cache.capacity".into(),
                message: format!(
                    "{message} (the filesystem holding {})",
                    self.cache.dir.display()
                ),
            })
    }

    /// `cache.capacity` in bytes on the filesystem holding `cache.dir` (statvfs), checked
    /// against its total size: called at start by `serve` and `warm`, not by `check-config`,
    /// which checks a file for another machine's disk.
    pub fn resolve_capacity(&self, file: &str) -> Result<u64, ConfigError> {
        let total = filesystem_size(&self.cache.dir).map_err(|e| ConfigError::Invalid {
            file: file.to_string(),
            path: "cache.dir".into(),
            message: format!(
                "cannot read the size of the filesystem holding {}: {e}",
                self.cache.dir.display()
            ),
        })?;
        self.capacity_on(total, file)
    }
}

fn is_bucket_name(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
listen: 127.0.0.1:9000
auth: { access_key: milvus, secret_key: s3cr3t }
upstream: { endpoint_url: https://s3.us-east-1.amazonaws.com, region: us-east-1, bucket: milvus-bucket }
cache: { dir: /mnt/nvme/segment-cache, capacity: 800GiB }
warm: { prefixes: ["files/index_files/", "files/insert_log/4471/"], concurrency: 32 }
telemetry: { listen: 0.0.0.0:9101 }
"#;

    #[test]
    fn issue_example_parses() {
        let c = Config::parse(EXAMPLE, "x.yaml").unwrap();
        assert_eq!(c.cache.capacity, Capacity::Bytes(ByteSize(800 << 30)));
        assert_eq!(c.warm.prefixes.len(), 2);
        assert_eq!(c.upstream.bucket, "milvus-bucket");
        assert_eq!(c.telemetry.listen.port(), 9101);
        assert_eq!(c.max_object_size(800 << 30), 800 << 30);
        assert!(c.read_ahead.enabled, "read-ahead is on by default");
        assert_eq!(c.read_ahead.max_concurrent, 8);
    }

    #[test]
    fn byte_sizes() {
        assert_eq!("500MB".parse::<ByteSize>().unwrap(), ByteSize(500_000_000));
        assert_eq!("1.5GiB".parse::<ByteSize>().unwrap(), ByteSize(3 << 29));
        assert_eq!("42".parse::<ByteSize>().unwrap(), ByteSize(42));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!("GiB".parse::<ByteSize>().is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse(&EXAMPLE.replace("800GiB", "lots"), "x.yaml").unwrap_err();
        assert!(e.to_string().contains("cache.capacity"), "{e}");
        let e = Config::parse(
            &EXAMPLE.replace("concurrency: 32", "concurency: 32"),
            "x.yaml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("warm"), "{e}");
        assert!(e.to_string().contains("concurency"), "{e}");
        let e =
            Config::parse(&EXAMPLE.replace("milvus-bucket", "Bad_Bucket"), "x.yaml").unwrap_err();
        assert!(e.to_string().contains("upstream.bucket"), "{e}");
        let e = Config::parse(
            &EXAMPLE.replace("concurrency: 32", "concurrency: 0"),
            "x.yaml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("warm.concurrency"), "{e}");
        let e = Config::parse(
            &format!("{EXAMPLE}read_ahead: {{ max_concurrent: 0 }}\n"),
            "x.yaml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("read_ahead.max_concurrent"), "{e}");
        let c = Config::parse(
            &format!("{EXAMPLE}read_ahead: {{ enabled: false, max_bytes_per_segment: 1GiB }}\n"),
            "x.yaml",
        )
        .unwrap();
        assert!(!c.read_ahead.enabled);
        assert_eq!(c.read_ahead.max_bytes_per_segment, ByteSize(1 << 30));
        let c = Config::parse(EXAMPLE, "x.yaml").unwrap();
        assert_eq!(
            c.read_ahead.fields,
            ReadAheadFields::Learned,
            "learned by default"
        );
        assert_eq!(c.read_ahead.field_memory, Duration::from_secs(1800));
        let c = Config::parse(
            &format!("{EXAMPLE}read_ahead: {{ fields: all, field_memory: 2m }}\n"),
            "x.yaml",
        )
        .unwrap();
        assert_eq!(c.read_ahead.fields, ReadAheadFields::All);
        assert_eq!(c.read_ahead.field_memory, Duration::from_secs(120));
        let e = Config::parse(
            &format!("{EXAMPLE}read_ahead: {{ fields: some }}\n"),
            "x.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("read_ahead.fields") && e.contains("learned") && e.contains("all"),
            "{e}"
        );
    }

    #[test]
    fn capacities_parse_as_a_size_or_a_percentage() {
        let p = |s: &str| s.parse::<Capacity>();
        assert_eq!(p("400GiB"), Ok(Capacity::Bytes(ByteSize(400 << 30))));
        assert_eq!(p("1048576"), Ok(Capacity::Bytes(ByteSize(1 << 20))));
        assert_eq!(p("90%"), Ok(Capacity::Percent(90)));
        assert_eq!(p(" 100 %"), Ok(Capacity::Percent(100)));
        for bad in ["0%", "101%", "90.5%", "-5%", "%", "lots"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        // A YAML number is bytes; the default (no key) is a percentage.
        let c = Config::parse(&EXAMPLE.replace("800GiB", "1048576"), "x.yaml").unwrap();
        assert_eq!(c.cache.capacity, Capacity::Bytes(ByteSize(1 << 20)));
        let c = Config::parse(&EXAMPLE.replace(", capacity: 800GiB", ""), "x.yaml").unwrap();
        assert_eq!(
            c.cache.capacity,
            Capacity::Percent(DEFAULT_CAPACITY_PERCENT)
        );
        let c = Config::parse(&EXAMPLE.replace("800GiB", "\"75%\""), "x.yaml").unwrap();
        assert_eq!(c.cache.capacity, Capacity::Percent(75));
        let e = Config::parse(&EXAMPLE.replace("800GiB", "\"120%\""), "x.yaml").unwrap_err();
        assert!(e.to_string().contains("cache.capacity"), "{e}");
        assert!(e.to_string().contains("1% to 100%"), "{e}");
    }

    #[test]
    fn capacities_resolve_against_the_filesystem_size() {
        let fs = 474_000_000_000_u64;
        assert_eq!(Capacity::Percent(90).resolve(fs), Ok(426_600_000_000));
        assert_eq!(Capacity::Percent(100).resolve(fs), Ok(fs));
        assert_eq!(Capacity::Bytes(ByteSize(fs)).resolve(fs), Ok(fs));
        assert_eq!(
            Capacity::Bytes(ByteSize(400 << 30)).resolve(fs),
            Ok(400 << 30)
        );
        // No overflow on a huge filesystem.
        assert_eq!(Capacity::Percent(100).resolve(u64::MAX), Ok(u64::MAX));
        // The old EKS value on the instance's NVMe: more than the disk.
        let e = Capacity::Bytes(ByteSize(700 << 30))
            .resolve(fs)
            .unwrap_err();
        assert!(
            e.contains(&(700_u64 << 30).to_string()) && e.contains("700.0 GiB"),
            "{e}"
        );
        assert!(e.contains("474000000000") && e.contains("441.4 GiB"), "{e}");
    }

    #[test]
    fn a_capacity_above_the_filesystem_is_a_config_error_naming_key_value_and_size() {
        let c = Config::parse(&EXAMPLE.replace("800GiB", "700GiB"), "x.yaml").unwrap();
        let e = c.capacity_on(474_000_000_000, "x.yaml").unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("x.yaml: cache.capacity: "), "{m}");
        assert!(m.contains("700.0 GiB") && m.contains("441.4 GiB"), "{m}");
        assert!(m.contains("/mnt/nvme/segment-cache"), "{m}");
        // max_object_size follows the resolved budget.
        let c = Config::parse(&EXAMPLE.replace(", capacity: 800GiB", ""), "x.yaml").unwrap();
        assert_eq!(c.max_object_size(1000), 1000);
    }

    /// The real statvfs of the test's own filesystem: 100% is its total size, one byte more is
    /// refused, and a cache dir not created yet is measured on its nearest existing parent.
    #[test]
    fn statvfs_of_the_cache_dir() {
        let d = tempfile::tempdir().unwrap();
        let total = filesystem_size(d.path()).unwrap();
        assert!(total > 0);
        assert_eq!(
            filesystem_size(&d.path().join("not/yet/made")).unwrap(),
            total
        );
        let text = |cap: &str| {
            EXAMPLE.replace(
                "{ dir: /mnt/nvme/segment-cache, capacity: 800GiB }",
                &format!(
                    "{{ dir: \"{}\", capacity: {cap} }}",
                    d.path().join("c").display()
                ),
            )
        };
        let c = Config::parse(&text("\"100%\""), "x.yaml").unwrap();
        assert_eq!(c.resolve_capacity("x.yaml").unwrap(), total);
        let c = Config::parse(&text(&(total + 1).to_string()), "x.yaml").unwrap();
        let e = c.resolve_capacity("x.yaml").unwrap_err().to_string();
        assert!(
            e.contains("cache.capacity") && e.contains(&total.to_string()),
            "{e}"
        );
    }

    /// Every config type, Debug-printed with every secret set, shows none of them (the derived
    /// `Debug` of `UpstreamConfig` once printed `upstream.secret_key`).
    #[test]
    fn no_secret_is_debug_printed() {
        let text = EXAMPLE.replace(
            "bucket: milvus-bucket }",
            "bucket: milvus-bucket, access_key: AKIDUP, secret_key: up-s3cr3t }",
        );
        let c = Config::parse(&text, "x.yaml").unwrap();
        assert_eq!(c.upstream.access_key.as_deref(), Some("AKIDUP"));
        let printed = [
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{:?}", c.auth),
            format!("{:?}", c.upstream),
            format!("{:?}", c.cache),
            format!("{:?}", c.warm),
            format!("{:?}", c.telemetry),
        ];
        for p in &printed {
            assert!(!p.contains("s3cr3t"), "a secret in {p}");
        }
        // The rest is still there to debug with.
        assert!(printed[0].contains("AKIDUP") && printed[0].contains("milvus-bucket"));
    }
}
