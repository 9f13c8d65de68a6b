//! The routes of docs/web.md: sign-in, the area's map, tasks, cells and figures, live
//! changes as server-sent events, and officers' feedback written to the feedback topic.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_embed::RustEmbed;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::lifecycle::feedback::Feedback;
use crate::metrics::Metrics;
use crate::privacy::mask_digits;
use crate::rules::Level;
use crate::task::TaskId;

use super::auth::{self, Scope, Session, Sessions, Tokens};
use super::board::{Board, Entry, State as TaskState, TaskView};
use super::views::{GridSource, GridViews};

/// Content-Security-Policy of every answer: the pages' own files only, no inline code.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
/// The longest note an officer may write.
pub const MAX_NOTE_CHARS: usize = 500;
/// How often a live view gets the figures again.
const FIGURES_EVERY: Duration = Duration::from_secs(5);

#[derive(RustEmbed)]
#[folder = "web/"]
struct Pages;

#[derive(Debug, Clone, Serialize)]
pub struct OfficerInfo {
    pub officer_id: String,
    pub name: String,
    pub role: &'static str,
}

/// What the routes share.
pub struct Web {
    pub board: Arc<Mutex<Board>>,
    pub grid: GridSource,
    pub tokens: Tokens,
    pub sessions: Sessions,
    pub changes: broadcast::Sender<TaskId>,
    pub producer: FutureProducer,
    pub feedback_topic: String,
    pub centre_desk: String,
    pub secure_cookie: bool,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

type Shared = Arc<Web>;

#[derive(Debug)]
enum ApiError {
    SignedOut,
    Forbidden,
    NotFound,
    Bad(String),
    Conflict(String),
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            ApiError::SignedOut => (StatusCode::UNAUTHORIZED, "not signed in".to_string()),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden".to_string()),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not found".to_string()),
            ApiError::Bad(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        };
        (status, Json(json!({ "error": msg }))).into_response()
    }
}

pub fn router(web: Shared) -> Router {
    Router::new()
        .route("/", get(|| page("index.html")))
        .route("/desk", get(|| page("desk.html")))
        .route("/officer", get(|| page("officer.html")))
        .route("/assets/{name}", get(asset))
        .route("/api/session", post(sign_in).delete(sign_out))
        .route("/api/me", get(me))
        .route("/api/grid", get(grid))
        .route("/api/tasks", get(tasks))
        .route("/api/tasks/{id}", get(task_detail))
        .route("/api/cells/{grid_id}", get(cell))
        .route("/api/figures", get(figures))
        .route("/api/events", get(events))
        .route("/api/feedback", post(feedback))
        .layer(middleware::from_fn(security_headers))
        .with_state(web)
}

async fn security_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

fn embedded(name: &str) -> Response {
    match Pages::get(name) {
        Some(file) => {
            let ctype = match name.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("js" | "mjs") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("svg") => "image/svg+xml",
                Some("png") => "image/png",
                Some("ico") => "image/x-icon",
                _ => "application/octet-stream",
            };
            ([(header::CONTENT_TYPE, ctype)], file.data).into_response()
        }
        None => ApiError::NotFound.into_response(),
    }
}

async fn page(name: &'static str) -> Response {
    embedded(name)
}

async fn asset(Path(name): Path<String>) -> Response {
    if name.contains('/') || name.contains("..") {
        return ApiError::NotFound.into_response();
    }
    embedded(&format!("assets/{name}"))
}

impl Web {
    fn session(&self, headers: &HeaderMap) -> Result<(String, Session), ApiError> {
        let id = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(auth::session_cookie)
            .ok_or(ApiError::SignedOut)?;
        let s = self.sessions.get(id).ok_or(ApiError::SignedOut)?;
        Ok((id.to_string(), s))
    }

    /// A call that changes state: the session's CSRF token, and the browser's `Origin`
    /// (when sent) naming this service.
    fn session_for_change(&self, headers: &HeaderMap) -> Result<(String, Session), ApiError> {
        let (id, s) = self.session(headers)?;
        let csrf = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        if csrf != Some(s.csrf.as_str()) {
            return Err(ApiError::Forbidden);
        }
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
            let same = host.is_some_and(|h| {
                origin == format!("http://{h}") || origin == format!("https://{h}")
            });
            if !same {
                return Err(ApiError::Forbidden);
            }
        }
        Ok((id, s))
    }

    /// The grid as the views show it now. When a reload has swapped the grid map, the board
    /// takes the new stations' districts too.
    fn views(&self) -> Arc<GridViews> {
        let (views, rebuilt) = self.grid.current();
        if rebuilt {
            self.board
                .lock()
                .expect("board lock")
                .set_districts(views.districts.clone());
        }
        views
    }

    fn officer_station(&self, scope: &Scope) -> Option<String> {
        match scope {
            Scope::Officer(o) => self.views().officer_station(o).map(str::to_string),
            _ => None,
        }
    }

    /// Who the feedback of a session names as its actor.
    fn actor(&self, scope: &Scope) -> String {
        match scope {
            Scope::Centre => self.centre_desk.clone(),
            Scope::Station(s) => self
                .views()
                .stations
                .get(s)
                .map(|(_, desk)| desk.clone())
                .unwrap_or_default(),
            Scope::Officer(o) => o.clone(),
        }
    }
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(State(w): State<Shared>, body: Option<Json<SignIn>>) -> Response {
    let sign_ins = &w.metrics.web.sign_ins;
    let Some(scope) = body.and_then(|Json(b)| w.tokens.check(&b.token)) else {
        info!("web sign-in refused");
        sign_ins.with_label_values(&["refused"]).inc();
        return ApiError::SignedOut.into_response();
    };
    sign_ins.with_label_values(&["ok"]).inc();
    info!(scope = scope.kind(), id = scope_id(&scope), "web sign-in");
    let id = w.sessions.open(scope);
    let cookie = format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        auth::COOKIE,
        w.sessions.ttl().as_secs(),
        if w.secure_cookie { "; Secure" } else { "" }
    );
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

fn scope_id(scope: &Scope) -> &str {
    match scope {
        Scope::Centre => "",
        Scope::Station(s) | Scope::Officer(s) => s,
    }
}

async fn sign_out(State(w): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (id, _) = w.session_for_change(&headers)?;
    w.sessions.close(&id);
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        auth::COOKIE
    );
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

async fn me(State(w): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (_, s) = w.session(&headers)?;
    let views = w.views();
    let (name, stations): (String, Vec<String>) = match &s.scope {
        Scope::Centre => ("anti-fraud centre".into(), {
            let mut all: Vec<String> = views.stations.keys().cloned().collect();
            all.sort();
            all
        }),
        Scope::Station(id) => (
            views
                .stations
                .get(id)
                .map(|(n, _)| n.clone())
                .unwrap_or_default(),
            vec![id.clone()],
        ),
        Scope::Officer(id) => {
            let (n, st) = views.officers.get(id).cloned().unwrap_or_default();
            (n, vec![st])
        }
    };
    Ok(Json(json!({
        "scope": s.scope.kind(),
        "id": scope_id(&s.scope),
        "name": name,
        "csrf": s.csrf,
        "stations": stations,
    }))
    .into_response())
}

async fn grid(State(w): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (_, s) = w.session(&headers)?;
    let station = match &s.scope {
        Scope::Centre => None,
        Scope::Station(st) => Some(st.clone()),
        Scope::Officer(_) => w.officer_station(&s.scope),
    };
    let views = w.views();
    let view = views
        .shapes
        .view(|c| station.as_deref().is_none_or(|st| c.station_id == st));
    Ok(Json(view).into_response())
}

#[derive(Deserialize)]
struct TaskQuery {
    station: Option<String>,
    level: Option<String>,
    state: Option<String>,
}

fn wanted(e: &Entry, q: &TaskQuery, level: Option<Level>) -> bool {
    let v = &e.view;
    let closed = matches!(v.state, TaskState::Closed | TaskState::Upgraded);
    let state_ok = match q.state.as_deref().unwrap_or("open") {
        "all" => true,
        "closed" => closed,
        "overdue" => v.overdue && !closed,
        _ => !closed,
    };
    state_ok
        && q.station
            .as_deref()
            .is_none_or(|s| v.station_id.as_deref() == Some(s))
        && level.is_none_or(|l| v.level == l)
}

async fn tasks(
    State(w): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<TaskQuery>,
) -> Result<Response, ApiError> {
    let (_, s) = w.session(&headers)?;
    let level = match q.level.as_deref() {
        None | Some("") => None,
        Some(l) => Some(serde_json::from_value::<Level>(json!(l)).map_err(|_| {
            ApiError::Bad(format!("level: `{l}` is not low, medium, high or critical"))
        })?),
    };
    if let Some(st) = q.state.as_deref() {
        if !matches!(st, "open" | "overdue" | "closed" | "all") {
            return Err(ApiError::Bad(format!(
                "state: `{st}` is not open, overdue, closed or all"
            )));
        }
    }
    let b = w.board.lock().expect("board lock");
    let mut list: Vec<&TaskView> = b
        .entries()
        .filter(|e| e.visible_to(&s.scope) && wanted(e, &q, level))
        .map(|e| &e.view)
        .collect();
    list.sort_by_key(|v| (v.deadline, v.task_id.0));
    Ok(Json(json!({ "as_of": b.now_ms(), "tasks": list })).into_response())
}

/// Whether the session must call the person: an officer on the task, or a desk it was
/// escalated to.
fn must_call(w: &Web, scope: &Scope, e: &Entry) -> bool {
    match scope {
        Scope::Officer(o) => e.view.assignee_id == *o || e.also_notify.contains(o),
        Scope::Station(_) | Scope::Centre => {
            let actor = w.actor(scope);
            e.view.assignee_id == actor || e.escalated_to.contains(&actor)
        }
    }
}

async fn task_detail(
    State(w): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, s) = w.session(&headers)?;
    let id = TaskId::parse(&id).ok_or(ApiError::NotFound)?;
    let b = w.board.lock().expect("board lock");
    let e = b
        .get(id)
        .filter(|e| e.visible_to(&s.scope))
        .ok_or(ApiError::NotFound)?;
    let mut v = serde_json::to_value(&e.view).expect("a view serializes");
    let extra = json!({
        "victim_number": must_call(&w, &s.scope, e).then_some(&e.victim_number),
        "script": e.script,
        "reasons": e.reasons,
        "also_notify": e.also_notify,
        "feedback": e.feedback,
    });
    v.as_object_mut()
        .expect("an object")
        .extend(extra.as_object().expect("an object").clone());
    Ok(Json(v).into_response())
}

async fn cell(
    State(w): State<Shared>,
    headers: HeaderMap,
    Path(grid_id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, s) = w.session(&headers)?;
    let views = w.views();
    let station = views
        .shapes
        .station_of(&grid_id)
        .ok_or(ApiError::NotFound)?;
    let allowed = match &s.scope {
        Scope::Centre => true,
        Scope::Station(st) => st == station,
        Scope::Officer(_) => w.officer_station(&s.scope).as_deref() == Some(station),
    };
    if !allowed {
        return Err(ApiError::NotFound);
    }
    let b = w.board.lock().expect("board lock");
    let in_cell: Vec<&Entry> = b
        .entries()
        .filter(|e| e.view.grid_id.as_deref() == Some(grid_id.as_str()) && e.visible_to(&s.scope))
        .collect();
    let mut open: Vec<&TaskView> = in_cell
        .iter()
        .filter(|e| !matches!(e.view.state, TaskState::Closed | TaskState::Upgraded))
        .map(|e| &e.view)
        .collect();
    open.sort_by_key(|v| v.deadline);
    let mut recent: Vec<(i64, &Entry)> = in_cell
        .iter()
        .filter_map(|e| e.view.outcome.and(e.closed_at).map(|at| (at, *e)))
        .collect();
    recent.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let recent: Vec<_> = recent
        .iter()
        .take(10)
        .map(|(at, e)| json!({"task_id": e.view.task_id, "outcome": e.view.outcome, "at": at}))
        .collect();
    let name = b
        .entries()
        .find_map(|e| {
            (e.view.grid_id.as_deref() == Some(grid_id.as_str())).then(|| e.view.grid_name.clone())
        })
        .flatten();
    Ok(Json(json!({
        "grid_id": grid_id,
        "name": name,
        "station_id": station,
        "officers": views.rosters.get(&grid_id).cloned().unwrap_or_default(),
        "tasks": open,
        "recent": recent,
    }))
    .into_response())
}

async fn figures(State(w): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (_, s) = w.session(&headers)?;
    let station = w.officer_station(&s.scope);
    let f = w
        .board
        .lock()
        .expect("board lock")
        .figures(&s.scope, station.as_deref());
    Ok(Json(f).into_response())
}

async fn events(
    State(w): State<Shared>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (_, s) = w.session(&headers)?;
    let rx = w.changes.subscribe();
    let live = LiveView::new(w.metrics.web.live_views.clone());
    let mut ticker = tokio::time::interval(FIGURES_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stream = futures::stream::unfold(
        (w, s.scope, rx, ticker, live),
        |(w, scope, mut rx, mut ticker, live)| async move {
            loop {
                let event = tokio::select! {
                    _ = w.shutdown.cancelled() => return None,
                    _ = ticker.tick() => {
                        let station = w.officer_station(&scope);
                        let f = w.board.lock().expect("board lock").figures(&scope, station.as_deref());
                        Event::default().event("figures").json_data(f).ok()
                    }
                    got = rx.recv() => match got {
                        Ok(id) => {
                            let b = w.board.lock().expect("board lock");
                            b.get(id)
                                .filter(|e| e.visible_to(&scope))
                                .and_then(|e| Event::default().event("task").json_data(&e.view).ok())
                        }
                        // Too far behind to replay: the page fetches its lists again.
                        Err(broadcast::error::RecvError::Lagged(_)) => Some(Event::default().event("reload").data("{}")),
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                };
                if let Some(event) = event {
                    return Some((Ok(event), (w, scope, rx, ticker, live)));
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Counts a page connected to the live events for as long as its stream lives.
struct LiveView(prometheus::IntGauge);

impl LiveView {
    fn new(gauge: prometheus::IntGauge) -> LiveView {
        gauge.inc();
        LiveView(gauge)
    }
}

impl Drop for LiveView {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackIn {
    task_id: String,
    outcome: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    loss_cny: Option<f64>,
}

async fn feedback(
    State(w): State<Shared>,
    headers: HeaderMap,
    body: Result<Json<FeedbackIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let (_, s) = w.session_for_change(&headers)?;
    let result = write_feedback(&w, &s, body).await;
    let label = match &result {
        Ok(_) => "written",
        Err(ApiError::Bad(_)) => "invalid",
        Err(ApiError::NotFound) => "not_found",
        Err(ApiError::Conflict(_)) => "closed",
        Err(_) => "unavailable",
    };
    w.metrics.web.feedback.with_label_values(&[label]).inc();
    result
}

async fn write_feedback(
    w: &Web,
    s: &Session,
    body: Result<Json<FeedbackIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(fb) = body.map_err(|e| ApiError::Bad(mask_digits(&e.body_text()).into_owned()))?;
    let id = TaskId::parse(&fb.task_id)
        .ok_or_else(|| ApiError::Bad("task_id: not a task id (32 hex digits)".into()))?;
    if fb
        .note
        .as_deref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
    {
        return Err(ApiError::Bad(format!(
            "note: longer than {MAX_NOTE_CHARS} characters"
        )));
    }
    let key = {
        let b = w.board.lock().expect("board lock");
        let e = b
            .get(id)
            .filter(|e| e.visible_to(&s.scope))
            .ok_or(ApiError::NotFound)?;
        if matches!(e.view.state, TaskState::Closed | TaskState::Upgraded) {
            return Err(ApiError::Conflict(
                "the task is closed (or upgraded: report on the new task)".into(),
            ));
        }
        e.view.assignee_id.clone()
    };
    let mut record = json!({
        "task_id": id,
        "actor_id": w.actor(&s.scope),
        "at": chrono::Utc::now().timestamp_millis(),
        "outcome": fb.outcome,
    });
    let o = record.as_object_mut().expect("an object");
    if let Some(r) = fb.reason {
        o.insert("reason".into(), json!(r));
    }
    if let Some(n) = fb.note.filter(|n| !n.trim().is_empty()) {
        o.insert("note".into(), json!(n));
    }
    if let Some(l) = fb.loss_cny {
        o.insert("loss_cny".into(), json!(l));
    }
    let bytes = serde_json::to_vec(&record).expect("a record serializes");
    // The service's own contract decides: the same errors a producer would be dead-lettered
    // for, told to the officer instead.
    Feedback::decode(&bytes)
        .map_err(|e| ApiError::Bad(mask_digits(&e.to_string()).into_owned()))?;
    let delivery = w
        .producer
        .send(
            FutureRecord::to(&w.feedback_topic)
                .key(key.as_bytes())
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await;
    match delivery {
        Ok(_) => Ok((StatusCode::ACCEPTED, Json(json!({ "task_id": id }))).into_response()),
        Err((e, _)) => Err(ApiError::Unavailable(format!(
            "the feedback topic did not take the record ({e}); try again"
        ))),
    }
}
