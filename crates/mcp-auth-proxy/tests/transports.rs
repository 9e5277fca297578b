//! In-process integration tests of the relay against small axum servers: the HTTP+SSE
//! fallback, endpoint origin checks, the streamable HTTP GET stream, SSE resumption,
//! session deletion at shutdown and HTTP errors turned into JSON-RPC errors.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use mcp_auth_proxy::{Proxy, ProxyConfig, TransportStrategy};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, DuplexStream, Lines};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One request the test server received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: Option<String>,
    session: Option<String>,
    last_event_id: Option<String>,
    body: String,
}

impl Seen {
    fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// State shared by a test server's handler and the test.
#[derive(Default)]
struct Server {
    seen: Mutex<Vec<Seen>>,
    /// Senders of the open SSE streams (kept so the streams stay open).
    streams: Mutex<Vec<mpsc::UnboundedSender<String>>>,
}

type Shared = Arc<Server>;

impl Server {
    fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &str) {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            session: header("mcp-session-id"),
            last_event_id: header("last-event-id"),
            body: body.to_owned(),
        });
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Pushes an event on every open stream.
    fn push(&self, event: String) {
        for tx in self.streams.lock().unwrap().iter() {
            let _ = tx.send(event.clone());
        }
    }

    /// A `text/event-stream` response that starts with `first` and stays open, fed by
    /// [`Server::push`].
    fn open_stream(&self, first: Vec<String>) -> Response {
        let (tx, rx) = mpsc::unbounded_channel::<String>();
        for e in first {
            tx.send(e).unwrap();
        }
        self.streams.lock().unwrap().push(tx);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|s| (Ok::<_, Infallible>(s), rx))
        });
        sse_response(Body::from_stream(stream))
    }
}

fn sse_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap()
}

fn json_response(v: &Value, session: Option<&str>) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json");
    if let Some(s) = session {
        b = b.header("mcp-session-id", s);
    }
    b.body(Body::from(v.to_string())).unwrap()
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// The local client's end of the proxy's stdio.
struct Client {
    stdin: Option<DuplexStream>,
    stdout: Lines<BufReader<DuplexStream>>,
    run: JoinHandle<Result<(), mcp_auth_proxy::ProxyError>>,
}

impl Client {
    fn start(url: &str, transport: TransportStrategy) -> Self {
        let mut config = ProxyConfig::new(url::Url::parse(url).unwrap());
        config.transport = transport;
        let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).build();
        let proxy = Proxy::new(config, http).unwrap();
        let (stdin, proxy_in) = tokio::io::duplex(1 << 16);
        let (proxy_out, stdout) = tokio::io::duplex(1 << 16);
        let run = tokio::spawn(proxy.run(proxy_in, proxy_out, std::future::pending()));
        Self {
            stdin: Some(stdin),
            stdout: BufReader::new(stdout).lines(),
            run,
        }
    }

    async fn send(&mut self, v: Value) {
        let w = self.stdin.as_mut().expect("stdin closed");
        let mut line = v.to_string();
        line.push('\n');
        w.write_all(line.as_bytes()).await.unwrap();
        w.flush().await.unwrap();
    }

    async fn recv(&mut self) -> Value {
        self.recv_within(READ_TIMEOUT).await
    }

    async fn recv_within(&mut self, limit: Duration) -> Value {
        let line = tokio::time::timeout(limit, self.stdout.next_line())
            .await
            .expect("timed out waiting for a message from the proxy")
            .expect("reading the proxy's output")
            .expect("the proxy's output ended");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

fn initialize(id: i64) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},
        "clientInfo":{"name":"test","version":"0"}}})
}

fn init_result(id: &Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"result":{
        "protocolVersion":"2025-06-18","capabilities":{"tools":{}},
        "serverInfo":{"name":"srv","version":"0"}}})
}

fn initialized() -> Value {
    json!({"jsonrpc":"2.0","method":"notifications/initialized"})
}

fn tools_result(id: &Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"result":{"tools":[
        {"name":"echo","inputSchema":{"type":"object"}}]}})
}

/// Polls the server's record until `pred` holds (bounded).
async fn wait_seen(server: &Server, what: &str, pred: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    loop {
        let seen = server.seen();
        if pred(&seen) {
            return seen;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("the server never saw {what}; it saw {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 1. HTTP+SSE fallback with http-first
// ---------------------------------------------------------------------------------------

async fn legacy_server(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    s.record(&method, &uri, &headers, &body);
    match (method.as_str(), uri.path()) {
        ("POST", "/sse") => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        ("GET", "/sse") => s.open_stream(vec![
            "event: endpoint\ndata: /messages?sid=abc\n\n".to_owned(),
        ]),
        ("POST", "/messages") => {
            let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if let (Some(id), Some(m)) = (msg.get("id"), msg.get("method").and_then(Value::as_str))
            {
                let answer = match m {
                    "initialize" => init_result(id),
                    "tools/list" => tools_result(id),
                    _ => json!({"jsonrpc":"2.0","id":id,"result":{}}),
                };
                s.push(format!("event: message\ndata: {answer}\n\n"));
            }
            accepted()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::test]
async fn http_first_falls_back_to_http_sse() {
    let server = Shared::default();
    let base = serve(
        Router::new()
            .fallback(legacy_server)
            .with_state(Arc::clone(&server)),
    )
    .await;
    let mut client = Client::start(&format!("{base}/sse"), TransportStrategy::HttpFirst);

    client.send(initialize(1)).await;
    let answer = client.recv().await;
    assert_eq!(answer["id"], json!(1), "{answer}");
    assert_eq!(
        answer["result"]["serverInfo"]["name"],
        json!("srv"),
        "{answer}"
    );

    client.send(initialized()).await;
    client
        .send(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
        .await;
    let answer = client.recv().await;
    assert_eq!(answer["id"], json!(2), "{answer}");
    assert_eq!(
        answer["result"]["tools"][0]["name"],
        json!("echo"),
        "{answer}"
    );

    let seen = wait_seen(&server, "three POSTs on /messages", |s| {
        s.iter()
            .filter(|r| r.method == Method::POST && r.path == "/messages")
            .count()
            >= 3
    })
    .await;
    let posts: Vec<&Seen> = seen
        .iter()
        .filter(|r| r.method == Method::POST && r.path == "/messages")
        .collect();
    for p in &posts {
        assert_eq!(p.query.as_deref(), Some("sid=abc"), "{p:?}");
    }
    let methods: Vec<Value> = posts
        .iter()
        .map(|p| p.json().unwrap()["method"].clone())
        .collect();
    assert_eq!(
        methods,
        vec![
            json!("initialize"),
            json!("notifications/initialized"),
            json!("tools/list")
        ]
    );
    // The streamable attempt came first, then the SSE GET.
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].path, "/sse");
    assert!(
        seen.iter()
            .any(|r| r.method == Method::GET && r.path == "/sse")
    );
    client.run.abort();
}

// ---------------------------------------------------------------------------------------
// 2. An endpoint on another origin is refused
// ---------------------------------------------------------------------------------------

async fn evil_endpoint_server(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    s.record(&method, &uri, &headers, &body);
    match (method.as_str(), uri.path()) {
        ("GET", "/sse") => s.open_stream(vec![
            "event: endpoint\ndata: http://evil.example/m\n\n".to_owned(),
        ]),
        _ => accepted(),
    }
}

#[tokio::test]
async fn sse_only_refuses_an_endpoint_on_another_origin() {
    let server = Shared::default();
    let base = serve(
        Router::new()
            .fallback(evil_endpoint_server)
            .with_state(Arc::clone(&server)),
    )
    .await;
    let mut client = Client::start(&format!("{base}/sse"), TransportStrategy::SseOnly);

    client.send(initialize(1)).await;
    // The refusal must fail the request at once; waiting for another endpoint event
    // (ENDPOINT_WAIT, 30 s) leaves the client hanging.
    let answer = client.recv().await;
    assert_eq!(answer["id"], json!(1), "{answer}");
    assert_eq!(answer["error"]["code"], json!(-32603), "{answer}");
    assert!(answer.get("result").is_none(), "{answer}");

    let seen = server.seen();
    assert!(
        seen.iter().all(|r| r.method == Method::GET),
        "the server saw a POST: {seen:#?}"
    );
    client.run.abort();
}

// ---------------------------------------------------------------------------------------
// 3. Streamable HTTP: the GET stream carries server → client requests
// ---------------------------------------------------------------------------------------

const SID: &str = "sess-1";

async fn streamable_get_server(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    s.record(&method, &uri, &headers, &body);
    let session = headers.get("mcp-session-id").and_then(|v| v.to_str().ok());
    match method.as_str() {
        "POST" => {
            let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            match msg.get("method").and_then(Value::as_str) {
                Some("initialize") => json_response(&init_result(&msg["id"]), Some(SID)),
                _ if session != Some(SID) => StatusCode::BAD_REQUEST.into_response(),
                Some(_) if msg.get("id").is_some() => {
                    json_response(&json!({"jsonrpc":"2.0","id":msg["id"],"result":{}}), None)
                }
                _ => accepted(),
            }
        }
        "GET" if session == Some(SID) => {
            let req = json!({"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage",
                "params":{"messages":[{"role":"user","content":{"type":"text","text":"hi"}}],
                          "maxTokens":10}});
            s.open_stream(vec![format!("data: {req}\n\n")])
        }
        "GET" => StatusCode::BAD_REQUEST.into_response(),
        "DELETE" => StatusCode::OK.into_response(),
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

#[tokio::test]
async fn streamable_get_stream_relays_server_requests() {
    let server = Shared::default();
    let base = serve(
        Router::new()
            .fallback(streamable_get_server)
            .with_state(Arc::clone(&server)),
    )
    .await;
    let mut client = Client::start(&format!("{base}/mcp"), TransportStrategy::HttpFirst);

    client.send(initialize(1)).await;
    let answer = client.recv().await;
    assert_eq!(answer["id"], json!(1), "{answer}");
    client.send(initialized()).await;

    let req = client.recv().await;
    assert_eq!(req["id"], json!("s1"), "{req}");
    assert_eq!(req["method"], json!("sampling/createMessage"), "{req}");

    client
        .send(json!({"jsonrpc":"2.0","id":"s1","result":{
            "role":"assistant","content":{"type":"text","text":"hello"},"model":"m"}}))
        .await;
    let seen = wait_seen(&server, "the sampling answer", |s| {
        s.iter()
            .any(|r| r.method == Method::POST && r.json().is_some_and(|v| v["id"] == json!("s1")))
    })
    .await;
    let answer = seen
        .iter()
        .find(|r| r.method == Method::POST && r.json().is_some_and(|v| v["id"] == json!("s1")))
        .unwrap();
    assert_eq!(answer.session.as_deref(), Some(SID), "{answer:?}");
    assert_eq!(answer.path, "/mcp");
    assert_eq!(answer.json().unwrap()["result"]["model"], json!("m"));
    let get = seen.iter().find(|r| r.method == Method::GET).unwrap();
    assert_eq!(get.session.as_deref(), Some(SID), "{get:?}");
    client.run.abort();
}

// ---------------------------------------------------------------------------------------
// 4. A broken SSE answer is resumed with Last-Event-ID
// ---------------------------------------------------------------------------------------

async fn resumption_server(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    s.record(&method, &uri, &headers, &body);
    let session = headers.get("mcp-session-id").and_then(|v| v.to_str().ok());
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    match method.as_str() {
        "POST" => {
            let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            match msg.get("method").and_then(Value::as_str) {
                Some("initialize") => json_response(&init_result(&msg["id"]), Some(SID)),
                Some("tools/call") => {
                    let note = json!({"jsonrpc":"2.0","method":"notifications/progress",
                        "params":{"progressToken":"t","progress":1}});
                    // One event, then the body ends without the answer.
                    sse_response(Body::from(format!("id: e1\ndata: {note}\n\n")))
                }
                _ => accepted(),
            }
        }
        "GET" if last == Some("e1") && session == Some(SID) => {
            let answer = json!({"jsonrpc":"2.0","id":7,"result":{
                "content":[{"type":"text","text":"done"}]}});
            sse_response(Body::from(format!("id: e2\ndata: {answer}\n\n")))
        }
        // No stream for server-initiated messages.
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

#[tokio::test]
async fn broken_sse_answer_is_resumed_with_last_event_id() {
    let server = Shared::default();
    let base = serve(
        Router::new()
            .fallback(resumption_server)
            .with_state(Arc::clone(&server)),
    )
    .await;
    let mut client = Client::start(&format!("{base}/mcp"), TransportStrategy::HttpFirst);

    client.send(initialize(1)).await;
    assert_eq!(client.recv().await["id"], json!(1));
    client.send(initialized()).await;
    client
        .send(json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
            "params":{"name":"echo","arguments":{}}}))
        .await;

    let note = client.recv().await;
    assert_eq!(note["method"], json!("notifications/progress"), "{note}");
    let answer = client.recv().await;
    assert_eq!(answer["id"], json!(7), "{answer}");
    assert_eq!(
        answer["result"]["content"][0]["text"],
        json!("done"),
        "{answer}"
    );

    let seen = server.seen();
    let resume = seen
        .iter()
        .find(|r| r.method == Method::GET && r.last_event_id.is_some())
        .unwrap_or_else(|| panic!("no resumption GET: {seen:#?}"));
    assert_eq!(resume.last_event_id.as_deref(), Some("e1"));
    assert_eq!(resume.session.as_deref(), Some(SID));
    client.run.abort();
}

// ---------------------------------------------------------------------------------------
// 5. The session is deleted when stdin closes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn session_is_deleted_at_eof() {
    let server = Shared::default();
    let base = serve(
        Router::new()
            .fallback(resumption_server)
            .with_state(Arc::clone(&server)),
    )
    .await;
    let mut client = Client::start(&format!("{base}/mcp"), TransportStrategy::HttpFirst);

    client.send(initialize(1)).await;
    assert_eq!(client.recv().await["id"], json!(1));
    client.send(initialized()).await;
    wait_seen(&server, "notifications/initialized", |s| {
        s.iter().any(|r| {
            r.json()
                .is_some_and(|v| v["method"] == json!("notifications/initialized"))
        })
    })
    .await;

    drop(client.stdin.take());
    let outcome = tokio::time::timeout(Duration::from_secs(5), &mut client.run)
        .await
        .expect("run did not return within 5 s after EOF")
        .expect("the run task panicked");
    assert!(outcome.is_ok(), "{outcome:?}");

    let seen = server.seen();
    let delete = seen
        .iter()
        .find(|r| r.method == Method::DELETE)
        .unwrap_or_else(|| panic!("no DELETE: {seen:#?}"));
    assert_eq!(delete.session.as_deref(), Some(SID));
    assert_eq!(delete.path, "/mcp");
}

// ---------------------------------------------------------------------------------------
// 6. HTTP 500 becomes a JSON-RPC error; the proxy goes on
// ---------------------------------------------------------------------------------------

async fn failing_server(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    s.record(&method, &uri, &headers, &body);
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match msg.get("method").and_then(Value::as_str) {
        Some("initialize") => json_response(&init_result(&msg["id"]), Some(SID)),
        Some("tools/call") => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            "database on fire",
        )
            .into_response(),
        Some("tools/list") => json_response(&tools_result(&msg["id"]), None),
        _ => accepted(),
    }
}

#[tokio::test]
async fn http_500_becomes_a_json_rpc_error() {
    let server = Shared::default();
    let base = serve(
        Router::new()
            .fallback(failing_server)
            .with_state(Arc::clone(&server)),
    )
    .await;
    let mut client = Client::start(&format!("{base}/mcp"), TransportStrategy::HttpFirst);

    client.send(initialize(1)).await;
    assert_eq!(client.recv().await["id"], json!(1));
    client.send(initialized()).await;

    client
        .send(json!({"jsonrpc":"2.0","id":"call-1","method":"tools/call",
            "params":{"name":"echo","arguments":{}}}))
        .await;
    let answer = client.recv().await;
    assert_eq!(answer["id"], json!("call-1"), "{answer}");
    assert_eq!(answer["error"]["code"], json!(-32603), "{answer}");
    let text = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(text.contains("500"), "{answer}");

    client
        .send(json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}))
        .await;
    let answer = client.recv().await;
    assert_eq!(answer["id"], json!(3), "{answer}");
    assert_eq!(
        answer["result"]["tools"][0]["name"],
        json!("echo"),
        "{answer}"
    );

    let seen = server.seen();
    assert!(
        seen.iter()
            .filter(|r| r.method == Method::POST && r.json().is_some_and(|v| v["id"] != json!(1)))
            .all(|r| r.session.as_deref() == Some(SID)),
        "{seen:#?}"
    );
    client.run.abort();
}
