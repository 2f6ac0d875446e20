//! Direct scrape of Milvus components' `/metrics`: static targets, every address a DNS name
//! resolves to (a headless Service lists its pods that way), or the URLs listed in a file that
//! something else keeps current (like Prometheus's file-based discovery, for hosts outside
//! Kubernetes and for the local cluster of the test harness, whose query nodes come and go).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use thiserror::Error;
use tokio::task::JoinSet;

use super::{MetricsSource, PollOutcome, ScaleOutRound};
use crate::engine::SignalEngine;
use crate::exposition::Limits;
use crate::exposition::StreamParser;
use crate::milvus::{METRICS_READ, TargetSample, extract};
use crate::scale_out::ScaleOutTracker;
use crate::snapshot::TargetHealth;
use crate::unknown::{TargetFailure, Unknown};

/// Largest `/metrics` body accepted from one target; a Milvus pod serves ~200 KiB.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The path scraped when a target names none: where every Milvus component serves its metrics.
pub const DEFAULT_METRICS_PATH: &str = "/metrics";

/// What a target string must look like, for error messages.
const EXPECTED: &str = "expected http(s)://HOST[:PORT][/PATH], dns+http(s)://NAME:PORT[/PATH] or file:PATH (PATH defaults to /metrics)";

/// A scrape target as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum TargetSpec {
    /// One URL, scraped as is: `http://10.0.0.5:9091/metrics` (`http://10.0.0.5:9091` scrapes
    /// `/metrics` too).
    Static(url::Url),
    /// `dns+http://NAME:PORT/PATH`: every address NAME resolves to, re-resolved each round.
    Dns {
        /// `http` or `https`.
        scheme: String,
        /// The name to resolve.
        host: String,
        /// Port to scrape on each address.
        port: u16,
        /// Path (with the query, if any), e.g. `/metrics`.
        path: String,
    },
    /// `file:PATH`: the `http(s)://` URLs listed in PATH, one per line (`#` starts a comment),
    /// re-read each round.
    File(std::path::PathBuf),
}

/// Why a target string is not a valid target.
#[derive(Debug, Error, PartialEq)]
#[error("invalid scrape target {target:?}: {reason}")]
pub struct InvalidTarget {
    target: String,
    reason: String,
}

impl FromStr for TargetSpec {
    type Err = InvalidTarget;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| InvalidTarget {
            target: s.to_string(),
            reason: reason.to_string(),
        };
        // Before the URL parser: it would read `file:targets.txt` as `/targets.txt`.
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(bad("file: needs the path of a file listing target URLs"));
            }
            return Ok(TargetSpec::File(path.into()));
        }
        let mut url = url::Url::parse(s).map_err(|e| bad(&format!("{e}; {EXPECTED}")))?;
        let (dns, scheme) = match url.scheme() {
            "http" => (false, "http"),
            "https" => (false, "https"),
            "dns+http" => (true, "http"),
            "dns+https" => (true, "https"),
            other => {
                return Err(bad(&format!(
                    "scheme {other:?} is not http, https, dns+http or dns+https; {EXPECTED}"
                )));
            }
        };
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => return Err(bad(&format!("missing host; {EXPECTED}"))),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials in the URL are not supported"));
        }
        if url.fragment().is_some() {
            return Err(bad(&format!("a #fragment is never sent; {EXPECTED}")));
        }
        if url.port() == Some(0) {
            return Err(bad("port must be a number from 1 to 65535"));
        }
        // One rule for both forms: no path (`http` always has at least `/`) means /metrics.
        if matches!(url.path(), "" | "/") {
            url.set_path(DEFAULT_METRICS_PATH);
        }
        if !dns {
            return Ok(TargetSpec::Static(url));
        }
        let port = url
            .port()
            .ok_or_else(|| bad("a dns+ target needs an explicit port"))?;
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        Ok(TargetSpec::Dns {
            scheme: scheme.to_string(),
            host,
            port,
            path,
        })
    }
}

impl TryFrom<String> for TargetSpec {
    type Error = InvalidTarget;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Static(url) => f.write_str(url.as_str()),
            TargetSpec::Dns {
                scheme,
                host,
                port,
                path,
            } => write!(f, "dns+{scheme}://{host}:{port}{path}"),
            TargetSpec::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// Scrapes every target concurrently each round and keeps the signal window.
pub struct ScrapeSource {
    targets: Vec<TargetSpec>,
    client: reqwest::Client,
    timeout: Duration,
    limits: Limits,
    engine: SignalEngine,
    scale_out: ScaleOutTracker,
}

impl ScrapeSource {
    /// A source over `targets`, each request bounded by `timeout`, signals over `window`.
    pub fn new(
        targets: Vec<TargetSpec>,
        timeout: Duration,
        window: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("milvus-scaler/", env!("CARGO_PKG_VERSION")))
            // No idle keep-alive connections: each one would hold a read buffer grown to the
            // ~200 KB body size, which across 50 pods dominates this process's memory. A new
            // connection per scrape costs one loopback/in-cluster handshake a second.
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(Self {
            targets,
            client,
            timeout,
            limits: Limits::default(),
            engine: SignalEngine::new(window),
            scale_out: ScaleOutTracker::default(),
        })
    }

    /// The same source with `search_demand`'s drain time (`signals.demand_drain`); default
    /// [`crate::engine::DEFAULT_DEMAND_DRAIN`].
    pub fn with_demand_drain(mut self, drain: Duration) -> Self {
        self.engine = self.engine.with_demand_drain(drain);
        self
    }

    async fn resolve(&self) -> (Vec<String>, Vec<TargetHealth>) {
        let mut urls = BTreeSet::new();
        let mut failures = Vec::new();
        for spec in &self.targets {
            match spec {
                TargetSpec::Static(url) => {
                    urls.insert(url.to_string());
                }
                TargetSpec::File(path) => match read_target_file(path).await {
                    Ok(listed) => urls.extend(listed),
                    Err(error) => failures.push(TargetHealth {
                        target: spec.to_string(),
                        error: Some(error),
                        duration: Duration::ZERO,
                    }),
                },
                TargetSpec::Dns {
                    scheme,
                    host,
                    port,
                    path,
                } => {
                    let started = Instant::now();
                    let lookup = tokio::time::timeout(
                        self.timeout,
                        tokio::net::lookup_host((host.as_str(), *port)),
                    );
                    match lookup.await {
                        Ok(Ok(addrs)) => {
                            let before = urls.len();
                            urls.extend(addrs.map(|a| format!("{scheme}://{a}{path}")));
                            if urls.len() == before {
                                failures.push(TargetHealth {
                                    target: spec.to_string(),
                                    error: Some(format!("{host} resolved to no address")),
                                    duration: started.elapsed(),
                                });
                            }
                        }
                        Ok(Err(e)) => failures.push(TargetHealth {
                            target: spec.to_string(),
                            error: Some(format!("cannot resolve {host}: {e}")),
                            duration: started.elapsed(),
                        }),
                        Err(_) => failures.push(TargetHealth {
                            target: spec.to_string(),
                            error: Some(format!(
                                "resolving {host} took longer than {:?}",
                                self.timeout
                            )),
                            duration: started.elapsed(),
                        }),
                    }
                }
            }
        }
        (urls.into_iter().collect(), failures)
    }
}

/// The target URLs a `file:` target lists. Every line must be a static `http(s)://` target, so
/// a typo is reported (naming the line) instead of silently dropping a pod from the signals.
async fn read_target_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("cannot read target file {}: {e}", path.display()))?;
    parse_target_list(&text).map_err(|(line, e)| format!("{}:{line}: {e}", path.display()))
}

/// Parses a target list: one URL per line, blank lines and `#` comments ignored.
fn parse_target_list(text: &str) -> Result<Vec<String>, (usize, String)> {
    let mut urls = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match line.parse::<TargetSpec>() {
            Ok(TargetSpec::Static(url)) => urls.push(url.to_string()),
            Ok(_) => return Err((i + 1, format!("expected an http(s):// URL, got {line:?}"))),
            Err(e) => return Err((i + 1, e.to_string())),
        }
    }
    Ok(urls)
}

/// Fetches one target and extracts its sample, parsing the body as it streams in.
async fn scrape_one(
    client: reqwest::Client,
    url: String,
    limits: Limits,
) -> Result<TargetSample, String> {
    let mut response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| describe_reqwest(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {status} from {url}"));
    }
    let mut parser = StreamParser::new(limits, |name: &str| METRICS_READ.contains(&name));
    let mut received = 0usize;
    while let Some(chunk) = response.chunk().await.map_err(|e| describe_reqwest(&e))? {
        received += chunk.len();
        if received > MAX_BODY_BYTES {
            return Err(format!("body larger than {MAX_BODY_BYTES} bytes"));
        }
        parser
            .feed(&chunk)
            .map_err(|e| format!("malformed metrics: {e}"))?;
    }
    let exposition = parser
        .finish()
        .map_err(|e| format!("malformed metrics: {e}"))?;
    Ok(extract(&exposition))
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut message = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

impl MetricsSource for ScrapeSource {
    async fn poll(&mut self) -> PollOutcome {
        let at = SystemTime::now();
        let (urls, mut health) = self.resolve().await;
        let listed: BTreeSet<String> = urls.iter().cloned().collect();
        let mut tasks = JoinSet::new();
        for url in urls {
            let client = self.client.clone();
            let limits = self.limits;
            tasks.spawn(async move {
                let started = Instant::now();
                let result = scrape_one(client, url.clone(), limits).await;
                (url, result, started.elapsed())
            });
        }
        let mut samples = BTreeMap::new();
        while let Some(joined) = tasks.join_next().await {
            let Ok((url, result, duration)) = joined else {
                continue;
            };
            metrics::histogram!(crate::metric_names::SCRAPE_DURATION, "target" => url.clone())
                .record(duration.as_secs_f64());
            metrics::gauge!(crate::metric_names::TARGET_UP, "target" => url.clone())
                .set(if result.is_ok() { 1.0 } else { 0.0 });
            let error = match result {
                Ok(sample) => {
                    samples.insert(url.clone(), sample);
                    None
                }
                Err(e) => Some(e),
            };
            health.push(TargetHealth {
                target: url,
                error,
                duration,
            });
        }
        health.sort_by(|a, b| a.target.cmp(&b.target));
        let all_failed_reason = (samples.is_empty() && !health.is_empty()).then(|| {
            Unknown::SourceUnreachable(
                health
                    .iter()
                    .filter_map(|h| {
                        let error = h.error.clone()?;
                        Some(TargetFailure {
                            target: h.target.clone(),
                            error,
                        })
                    })
                    .collect(),
            )
        });
        let complete = health
            .iter()
            .all(|h| h.error.is_none() || listed.contains(&h.target));
        let events = self.scale_out.observe(at, &listed, complete, &samples);
        let scale_out = Some(ScaleOutRound {
            events,
            counts: self.scale_out.counts(),
        });
        self.engine.observe(at, samples);
        let mut values = self.engine.compute();
        if let Some(reason) = all_failed_reason {
            for value in values.values_mut() {
                *value = Err(reason.clone());
            }
        }
        PollOutcome {
            at,
            values,
            targets: health,
            window: self.engine.window(),
            scale_out,
        }
    }

    fn describe(&self) -> String {
        let names: Vec<String> = self.targets.iter().map(ToString::to_string).collect();
        format!("scrape {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn static_url(s: &str) -> String {
        match s.parse::<TargetSpec>() {
            Ok(TargetSpec::Static(url)) => url.to_string(),
            other => panic!("{s}: {other:?}"),
        }
    }

    fn dns(s: &str) -> (String, String, u16, String) {
        match s.parse::<TargetSpec>() {
            Ok(TargetSpec::Dns {
                scheme,
                host,
                port,
                path,
            }) => (scheme, host, port, path),
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn target_specs() {
        assert_eq!(
            static_url("http://127.0.0.1:9091/metrics"),
            "http://127.0.0.1:9091/metrics"
        );
        assert_eq!(
            dns("dns+http://milvus-querynode.milvus.svc:9091/metrics"),
            (
                "http".into(),
                "milvus-querynode.milvus.svc".into(),
                9091,
                "/metrics".into()
            )
        );
        assert_eq!(
            dns("dns+https://qn.milvus.svc:9091/custom?x=1"),
            (
                "https".into(),
                "qn.milvus.svc".into(),
                9091,
                "/custom?x=1".into()
            )
        );
        assert_eq!(
            static_url("https://[::1]:9091/m/x?y=1"),
            "https://[::1]:9091/m/x?y=1"
        );
        assert!("file:".parse::<TargetSpec>().is_err());
        assert_eq!(
            "file:/run/targets.txt"
                .parse::<TargetSpec>()
                .unwrap()
                .to_string(),
            "file:/run/targets.txt"
        );
        assert_eq!(
            "file:targets.txt".parse::<TargetSpec>(),
            Ok(TargetSpec::File("targets.txt".into())),
            "a relative path stays relative"
        );
    }

    #[test]
    fn both_forms_scrape_metrics_when_no_path_is_given() {
        for spec in ["http://10.0.0.5:9091", "http://10.0.0.5:9091/"] {
            assert_eq!(static_url(spec), "http://10.0.0.5:9091/metrics", "{spec}");
        }
        for spec in [
            "dns+http://qn.milvus.svc:9091",
            "dns+http://qn.milvus.svc:9091/",
        ] {
            assert_eq!(dns(spec).3, "/metrics", "{spec}");
        }
        // What the scrape asks for: the URL resolve() hands to the scraper.
        assert_eq!(
            "http://10.0.0.5:9091"
                .parse::<TargetSpec>()
                .unwrap()
                .to_string(),
            "http://10.0.0.5:9091/metrics"
        );
        assert_eq!(
            "dns+http://qn:9091"
                .parse::<TargetSpec>()
                .unwrap()
                .to_string(),
            "dns+http://qn:9091/metrics"
        );
    }

    #[test]
    fn bad_targets_say_what_was_expected() {
        for (bad, says) in [
            ("127.0.0.1:9091", "expected http(s)://HOST"),
            ("milvus-proxy", "expected http(s)://HOST"),
            ("ftp://x/metrics", "scheme \"ftp\" is not http"),
            ("dns+http://name/metrics", "explicit port"),
            ("http://:/x", "expected http(s)://HOST"),
            ("http://h:99999/x", "expected http(s)://HOST"),
            ("http://h:0/x", "from 1 to 65535"),
            ("http://u:p@h:1/x", "credentials"),
            ("http://h:1/metrics#x", "fragment"),
            ("dns+http://:9091/metrics", "empty host"),
            ("dns+http:///metrics", "host"),
        ] {
            let err = bad.parse::<TargetSpec>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "names the target: {err}");
        }
    }

    #[test]
    fn target_lists_take_urls_and_name_the_bad_line() {
        let text = "# query nodes\nhttp://127.0.0.1:21001/metrics\n\n  http://127.0.0.1:21002/metrics # qn2\n";
        assert_eq!(
            parse_target_list(text).unwrap(),
            [
                "http://127.0.0.1:21001/metrics",
                "http://127.0.0.1:21002/metrics"
            ]
        );
        assert_eq!(parse_target_list("").unwrap(), Vec::<String>::new());
        let (line, err) = parse_target_list("http://a:1/m\ndns+http://b:2/m\n").unwrap_err();
        assert_eq!(line, 2, "{err}");
        let (line, _) = parse_target_list("http://a:1/m\nhttp://b:99999/m").unwrap_err();
        assert_eq!(line, 2);
    }

    #[tokio::test]
    async fn a_target_file_is_read_each_round_and_a_missing_one_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.txt");
        std::fs::write(&path, "http://127.0.0.1:1/metrics\n").unwrap();
        let spec = TargetSpec::File(path.clone());
        let source =
            ScrapeSource::new(vec![spec], Duration::from_secs(1), Duration::from_secs(10)).unwrap();
        let (urls, failures) = source.resolve().await;
        assert_eq!(urls, ["http://127.0.0.1:1/metrics"]);
        assert!(failures.is_empty());
        std::fs::write(
            &path,
            "http://127.0.0.1:1/metrics\nhttp://127.0.0.1:2/metrics\n",
        )
        .unwrap();
        assert_eq!(source.resolve().await.0.len(), 2);
        std::fs::remove_file(&path).unwrap();
        let (urls, failures) = source.resolve().await;
        assert!(urls.is_empty());
        let error = failures[0].error.as_deref().unwrap();
        assert!(error.contains("cannot read target file"), "{error}");
    }

    #[test]
    fn the_demand_drain_reaches_the_engine() {
        let source =
            ScrapeSource::new(vec![], Duration::from_secs(1), Duration::from_secs(10)).unwrap();
        assert_eq!(
            source.engine.demand_drain(),
            crate::engine::DEFAULT_DEMAND_DRAIN
        );
        let source = source.with_demand_drain(Duration::from_secs(20));
        assert_eq!(source.engine.demand_drain(), Duration::from_secs(20));
        assert_eq!(source.engine.window(), Duration::from_secs(10));
    }

    /// A loopback HTTP server answering every request with the status and body it holds now,
    /// which the test changes between rounds: a scripted Milvus `/metrics` endpoint.
    struct Endpoint {
        url: String,
        reply: std::sync::Arc<std::sync::Mutex<(u16, String)>>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        addr: std::net::SocketAddr,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Endpoint {
        fn start(status: u16, body: &str) -> Self {
            use std::io::{Read, Write};
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let reply = std::sync::Arc::new(std::sync::Mutex::new((status, body.to_string())));
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (r, s) = (reply.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if s.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let (status, body) = r.lock().unwrap().clone();
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            });
            Self {
                url: format!("http://{addr}/metrics"),
                reply,
                stop,
                addr,
                thread: Some(thread),
            }
        }

        fn set(&self, status: u16, body: &str) {
            *self.reply.lock().unwrap() = (status, body.to_string());
        }
    }

    impl Drop for Endpoint {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            // Wakes the accept loop so it sees the flag.
            let _ = std::net::TcpStream::connect(self.addr);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn phases(outcome: &PollOutcome) -> Vec<(String, crate::scale_out::Phase)> {
        let round = outcome
            .scale_out
            .as_ref()
            .expect("the scrape tracks scale-out");
        round
            .events
            .iter()
            .map(|e| (e.target.clone(), e.phase))
            .collect()
    }

    #[tokio::test]
    async fn a_query_node_added_to_the_target_file_reports_its_phases() {
        use crate::scale_out::Phase;
        let querycoord = Endpoint::start(
            200,
            "milvus_querycoord_querynode_num 1\nmilvus_querycoord_task_num{querycoord_task_type=\"segment_move\"} 0\n",
        );
        // The node's process is not serving yet: its pod is listed before it answers.
        let node = Endpoint::start(503, "");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.txt");
        std::fs::write(&path, format!("{}\n", querycoord.url)).unwrap();
        let mut source = ScrapeSource::new(
            vec![TargetSpec::File(path.clone())],
            Duration::from_secs(2),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(phases(&source.poll().await), vec![]);
        std::fs::write(&path, format!("{}\n{}\n", querycoord.url, node.url)).unwrap();
        assert_eq!(
            phases(&source.poll().await),
            vec![],
            "listed, not answering"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let registered = "milvus_querynode_read_task_ready_len{node_id=\"4\"} 0\n";
        node.set(200, registered);
        let n = node.url.clone();
        let up = source.poll().await;
        assert_eq!(
            phases(&up),
            vec![(n.clone(), Phase::Up), (n.clone(), Phase::Registered)]
        );
        let event = &up.scale_out.as_ref().unwrap().events[0];
        assert_eq!(event.node_id, "4");
        assert!(
            event.seconds >= 0.05,
            "timed from the round it was listed: {}",
            event.seconds
        );
        node.set(
            200,
            &format!(
                "{registered}milvus_querynode_segment_num{{node_id=\"4\",segment_state=\"Sealed\"}} 2\n\
                 milvus_querynode_sq_req_count{{node_id=\"4\",query_type=\"search\",scope=\"FromLeader\",status=\"total\"}} 1\n"
            ),
        );
        assert_eq!(
            phases(&source.poll().await),
            vec![
                (n.clone(), Phase::FirstSegment),
                (n.clone(), Phase::Serving)
            ]
        );
        // Settled after DEFAULT_SETTLE_ROUNDS stable rounds (this one included).
        for _ in 1..crate::scale_out::DEFAULT_SETTLE_ROUNDS - 1 {
            assert_eq!(phases(&source.poll().await), vec![]);
        }
        let settled = source.poll().await;
        assert_eq!(phases(&settled), vec![(n.clone(), Phase::Settled)]);
        let counts = &settled.scale_out.as_ref().unwrap().counts;
        assert!(Phase::ALL.iter().all(|p| counts[p] == 1), "{counts:?}");
        // The pod leaves the list: forgotten, no longer counted.
        std::fs::write(&path, format!("{}\n", querycoord.url)).unwrap();
        let gone = source.poll().await;
        assert!(
            gone.scale_out.unwrap().counts.values().all(|c| *c == 0),
            "a node that left is not counted"
        );
    }
}
