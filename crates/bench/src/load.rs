//! The load generator: the same client for every target. Saturation is closed-loop with a fixed
//! number of connections; fixed rates are open-loop (requests are sent on schedule whether or
//! not earlier ones have returned), latency measured from each request's send time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// One kind of request, sent again and again.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub body: bytes::Bytes,
    pub headers: Vec<(String, String)>,
}

/// A fresh body for each request (e.g. a new card number to tokenize), or the same one.
pub type BodyFn = Arc<dyn Fn(u64) -> bytes::Bytes + Send + Sync>;

pub struct Outcome {
    pub completed: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

impl Outcome {
    pub fn throughput(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

pub fn client(extra_root: Option<&std::path::Path>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .http1_only()
        .timeout(Duration::from_secs(30));
    if let Some(path) = extra_root {
        let pem = std::fs::read(path).expect("read CA");
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA"));
    }
    builder.build().expect("client")
}

/// One request; whether it succeeded (a 2xx, its body read whole).
pub async fn send(client: &reqwest::Client, target: &Target, body: bytes::Bytes) -> bool {
    let mut req = client.post(&target.url).body(body);
    for (k, v) in &target.headers {
        req = req.header(k, v);
    }
    match req.send().await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            ok & resp.bytes().await.is_ok()
        }
        Err(_) => false,
    }
}

/// Latencies, successes and failures gathered by the workers of one run.
type Tally = Mutex<(Histogram<u64>, u64, u64)>;

fn outcome(shared: &Tally, start: Instant) -> Outcome {
    let elapsed = start.elapsed();
    let (latency, completed, errors) =
        std::mem::replace(&mut *shared.lock().expect("lock"), (histogram(), 0, 0));
    Outcome {
        completed,
        errors,
        elapsed,
        latency,
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Closed loop: `connections` workers send back to back for `duration`.
pub async fn saturate(
    client: &reqwest::Client,
    target: &Target,
    bodies: Option<BodyFn>,
    connections: usize,
    duration: Duration,
) -> Outcome {
    let shared = Arc::new(Mutex::new((histogram(), 0u64, 0u64)));
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (client, target, shared, bodies, counter) = (
                client.clone(),
                target.clone(),
                shared.clone(),
                bodies.clone(),
                counter.clone(),
            );
            tokio::spawn(async move {
                let mut local = histogram();
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let body = bodies
                        .as_ref()
                        .map_or_else(|| target.body.clone(), |f| f(n));
                    let sent = Instant::now();
                    if send(&client, &target, body).await {
                        let _ = local.record(sent.elapsed().as_micros() as u64);
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                let mut all = shared.lock().expect("lock");
                all.0.add(&local).expect("merge");
                all.1 += ok;
                all.2 += failed;
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    outcome(&shared, start)
}

/// Closed loop: exactly `total` requests over `connections` workers; returns how many succeeded.
pub async fn count(
    client: &reqwest::Client,
    target: &Target,
    bodies: BodyFn,
    connections: usize,
    total: u64,
) -> u64 {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (client, target, bodies, next, ok) = (
                client.clone(),
                target.clone(),
                bodies.clone(),
                next.clone(),
                ok.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    if send(&client, &target, bodies(n)).await {
                        ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    ok.load(std::sync::atomic::Ordering::Relaxed)
}

/// Open loop: `rate` requests per second for `duration`, each sent on schedule.
pub async fn fixed_rate(
    client: &reqwest::Client,
    target: &Target,
    bodies: Option<BodyFn>,
    rate: u64,
    duration: Duration,
) -> Outcome {
    let total = rate * duration.as_secs();
    let shared = Arc::new(Mutex::new((histogram(), 0u64, 0u64)));
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent_count = 0u64;
    let mut tasks = Vec::with_capacity(total as usize);
    while sent_count < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent_count < due {
            let (client, target, shared) = (client.clone(), target.clone(), shared.clone());
            let body = bodies
                .as_ref()
                .map_or_else(|| target.body.clone(), |f| f(sent_count));
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let ok = send(&client, &target, body).await;
                let mut all = shared.lock().expect("lock");
                if ok {
                    let _ = all.0.record(sent.elapsed().as_micros() as u64);
                    all.1 += 1;
                } else {
                    all.2 += 1;
                }
            }));
            sent_count += 1;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    outcome(&shared, start)
}
