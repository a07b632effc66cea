//! JSON-RPC over HTTP(S) to the chain, with failover across `chain.rpc_urls`.
//!
//! Every request is a JSON-RPC batch (one HTTP round trip however many calls it carries). An
//! endpoint that cannot be reached, times out or answers with a non-JSON-RPC body is skipped for
//! the next one; the one that answered is tried first next time. URLs often carry an API key, so
//! an endpoint is named by its index (`rpc_urls[1]`) in logs, errors and metrics, never by URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy_json_rpc::{ErrorPayload, Id, Request, Response, ResponsePayload};
use avsnode_metrics::Metrics;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use serde_json::value::RawValue;
use tracing::debug;

/// Largest response body read (a log query over a busy range can be large).
const MAX_RESPONSE: usize = 64 << 20;

/// An answer the endpoint gave to one call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CallError {
    /// `execution reverted` (code 3), with the revert data.
    Reverted(String),
    /// Any other JSON-RPC error.
    Error(String),
}

/// No endpoint answered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unreachable(pub(crate) String);

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(crate) struct Rpc {
    urls: Vec<hyper::Uri>,
    client: HttpsClient,
    timeout: Duration,
    preferred: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("endpoints", &self.urls.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Rpc {
    /// A client for `urls` (already checked to parse), each request bounded by `timeout`.
    pub(crate) fn new(
        urls: Vec<hyper::Uri>,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Rpc> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(Rpc {
            urls,
            client,
            timeout,
            preferred: AtomicUsize::new(0),
            metrics,
        })
    }

    /// Sends `calls` as one batch; each call's result or error, in order. Fails only when no
    /// endpoint answered.
    pub(crate) async fn batch(
        &self,
        calls: &[(&'static str, Value)],
    ) -> Result<Vec<Result<Value, CallError>>, Unreachable> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let requests: Vec<Request<&Value>> = calls
            .iter()
            .enumerate()
            .map(|(i, (method, params))| Request::new(*method, Id::Number(i as u64), params))
            .collect();
        let body = Bytes::from(
            serde_json::to_vec(&requests)
                .map_err(|e| Unreachable(format!("cannot encode a JSON-RPC request: {e}")))?,
        );
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for n in 0..self.urls.len() {
            let i = (first + n) % self.urls.len();
            let started = Instant::now();
            let answer = self.post(i, body.clone()).await;
            self.metrics
                .chain_rpc_seconds
                .observe(started.elapsed().as_secs_f64());
            match answer.and_then(|text| parse(&text, calls.len())) {
                Ok(results) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    let endpoint = i.to_string();
                    for ((method, _), result) in calls.iter().zip(&results) {
                        let outcome = match result {
                            Ok(_) => "ok",
                            Err(CallError::Reverted(_)) => "reverted",
                            Err(CallError::Error(_)) => "error",
                        };
                        self.metrics
                            .chain_rpc_calls
                            .with_label_values(&[endpoint.as_str(), method, outcome])
                            .inc();
                    }
                    return Ok(results);
                }
                Err(why) => {
                    debug!(endpoint = i, %why, "chain RPC endpoint failed");
                    let endpoint = i.to_string();
                    for (method, _) in calls {
                        self.metrics
                            .chain_rpc_calls
                            .with_label_values(&[endpoint.as_str(), method, "unreachable"])
                            .inc();
                    }
                    failures.push(format!("rpc_urls[{i}]: {why}"));
                }
            }
        }
        Err(Unreachable(failures.join("; ")))
    }

    /// One HTTP POST; the body text. Errors never contain the URL.
    async fn post(&self, i: usize, body: Bytes) -> Result<String, String> {
        let request = hyper::Request::post(self.urls[i].clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| describe(&e))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            String::from_utf8(bytes.to_vec()).map_err(|_| "the answer is not UTF-8".to_owned())
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }
}

/// A connection error without the URL (hyper-util's own text names no URL; its sources are
/// I/O and TLS errors).
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = String::from(if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    });
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A batch answer, in request order.
fn parse(text: &str, expected: usize) -> Result<Vec<Result<Value, CallError>>, String> {
    let responses: Vec<Response<Box<RawValue>, Box<RawValue>>> = match serde_json::from_str(text) {
        Ok(r) => r,
        // Some servers answer a failed batch with one error object.
        Err(_) => {
            let one: Response<Box<RawValue>, Box<RawValue>> =
                serde_json::from_str(text).map_err(|e| format!("not a JSON-RPC answer ({e})"))?;
            if let ResponsePayload::Failure(e) = one.payload {
                return Err(format!("batch refused: {}", e.message));
            }
            vec![one]
        }
    };
    let mut out: Vec<Option<Result<Value, CallError>>> = vec![None; expected];
    for response in responses {
        let Id::Number(i) = response.id else { continue };
        let Some(slot) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) else {
            continue;
        };
        *slot = Some(match response.payload {
            ResponsePayload::Success(raw) => {
                serde_json::from_str(raw.get()).map_err(|e| CallError::Error(e.to_string()))
            }
            ResponsePayload::Failure(e) => Err(call_error(&e)),
        });
    }
    out.into_iter()
        .enumerate()
        .map(|(i, r)| r.ok_or_else(|| format!("the answer has no response for call {i}")))
        .collect()
}

fn call_error(e: &ErrorPayload<Box<RawValue>>) -> CallError {
    let data = e
        .data
        .as_ref()
        .map(|d| d.get().trim_matches('"').to_owned());
    if e.code == 3 || e.message.contains("revert") {
        CallError::Reverted(data.unwrap_or_default())
    } else {
        CallError::Error(format!("{} (code {})", e.message, e.code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers_are_matched_by_id_and_errors_kept_apart() {
        let text = r#"[{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted","data":"0x1234"}},
                       {"jsonrpc":"2.0","id":0,"result":"0x10"},
                       {"jsonrpc":"2.0","id":2,"error":{"code":-32000,"message":"header not found"}}]"#;
        let results = parse(text, 3).expect("parses");
        assert_eq!(results[0], Ok(Value::String("0x10".into())));
        assert_eq!(results[1], Err(CallError::Reverted("0x1234".into())));
        assert!(matches!(&results[2], Err(CallError::Error(e)) if e.contains("header not found")));
        assert!(
            parse(text, 4)
                .unwrap_err()
                .contains("no response for call 3")
        );
        assert!(
            parse("<html>", 1)
                .unwrap_err()
                .contains("not a JSON-RPC answer")
        );
    }
}
