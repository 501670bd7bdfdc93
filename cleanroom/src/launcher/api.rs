//! The launcher's HTTP API: the inbound filter (the reference's envoy + OPA `api.rego`: only
//! POST `^/gov/(exportLogs$|exportTelemetry$|.+/start$)` and GET `^/gov/.+/status$` pass, anything
//! else is 403 `RequestNotAllowed`), the four routes, and the one mapping from the launcher's
//! errors to status + body ([`start_error`], [`export_error`]).

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::AppState;
use super::supervisor::{Export, ExportError, Launcher, StartError};

/// Whether the inbound policy lets `method path` through.
pub fn is_allowed(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/gov/") else {
        return false;
    };
    if method == Method::POST {
        rest == "exportLogs"
            || rest == "exportTelemetry"
            || rest
                .strip_suffix("/start")
                .is_some_and(|app| !app.is_empty())
    } else if method == Method::GET {
        rest.strip_suffix("/status")
            .is_some_and(|app| !app.is_empty())
    } else {
        false
    }
}

fn body(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

fn message(text: &str) -> Response {
    axum::Json(json!({ "message": text })).into_response()
}

async fn inbound_filter(request: Request, next: Next) -> Response {
    if is_allowed(request.method(), request.uri().path()) {
        next.run(request).await
    } else {
        body(
            StatusCode::FORBIDDEN,
            "RequestNotAllowed",
            &format!(
                "{} {} is not allowed by the clean room's API policy.",
                request.method(),
                request.uri().path()
            ),
        )
    }
}

/// The status and body of a failed start.
pub fn start_error(error: &StartError) -> Response {
    let text = error.to_string();
    match error {
        StartError::ConsentDenied { .. } | StartError::ConsentUnavailable(_) => {
            body(StatusCode::FORBIDDEN, "ConsentCheckFailed", &text)
        }
        StartError::UnknownApp => body(StatusCode::NOT_FOUND, "ApplicationNotFound", &text),
        StartError::Mount(_) => body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "MountNotAvailable",
            &text,
        ),
        _ => body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ApplicationStartFailed",
            &text,
        ),
    }
}

/// The status and body of a failed export.
pub fn export_error(error: &ExportError) -> Response {
    let text = error.to_string();
    match error {
        ExportError::ConsentDenied { .. } | ExportError::ConsentUnavailable { .. } => {
            body(StatusCode::FORBIDDEN, "ConsentCheckFailed", &text)
        }
        ExportError::Mount(_) => body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "MountNotAvailable",
            &text,
        ),
        _ => body(StatusCode::INTERNAL_SERVER_ERROR, "ExportFailed", &text),
    }
}

async fn start(State(launcher): State<Launcher>, Path(app): Path<String>) -> Response {
    match launcher.start(&app).await {
        Ok(()) => message("Application started successfully."),
        Err(error) => {
            eprintln!("encfs code launcher: start of {app}: {error}");
            start_error(&error)
        }
    }
}

async fn status(State(launcher): State<Launcher>, Path(app): Path<String>) -> Response {
    if !launcher.knows(&app) {
        return body(
            StatusCode::NOT_FOUND,
            "ApplicationNotFound",
            "Application not found.",
        );
    }
    match launcher.status(&app).await {
        Ok(Some(AppState::Running)) => {
            axum::Json(json!({"status": "running", "exit_code": null})).into_response()
        }
        Ok(Some(AppState::Exited(code))) => {
            axum::Json(json!({"status": "exited", "exit_code": code})).into_response()
        }
        Ok(None) => body(
            StatusCode::NOT_FOUND,
            "ApplicationNotFound",
            &format!("Application {app} has not been started."),
        ),
        Err(error) => body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "StatusFailed",
            &error.to_string(),
        ),
    }
}

async fn export(launcher: Launcher, export: Export) -> Response {
    match launcher.export(export).await {
        Ok(_) => message(export.message()),
        Err(error) => {
            eprintln!("encfs code launcher: export: {error}");
            export_error(&error)
        }
    }
}

async fn export_logs(State(launcher): State<Launcher>) -> Response {
    export(launcher, Export::Logs).await
}

async fn export_telemetry(State(launcher): State<Launcher>) -> Response {
    export(launcher, Export::Telemetry).await
}

async fn not_found() -> Response {
    body(StatusCode::NOT_FOUND, "NotFound", "No such route.")
}

/// The API's routes behind the inbound filter.
pub fn router(launcher: Launcher) -> Router {
    Router::new()
        .route("/gov/exportLogs", post(export_logs))
        .route("/gov/exportTelemetry", post(export_telemetry))
        .route("/gov/{app}/start", post(start))
        .route("/gov/{app}/status", get(status))
        .fallback(not_found)
        .with_state(launcher)
        .layer(middleware::from_fn(inbound_filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbound_policy() {
        for (method, path) in [
            (Method::POST, "/gov/exportLogs"),
            (Method::POST, "/gov/exportTelemetry"),
            (Method::POST, "/gov/demo-app/start"),
            (Method::GET, "/gov/demo-app/status"),
        ] {
            assert!(is_allowed(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::GET, "/gov/exportLogs"),
            (Method::POST, "/gov/exportLogs/x"),
            (Method::GET, "/gov/demo-app/start"),
            (Method::POST, "/gov/demo-app/status"),
            (Method::POST, "/gov//start"),
            (Method::PUT, "/gov/demo-app/start"),
            (Method::DELETE, "/gov/demo-app/status"),
            (Method::POST, "/gov/start"),
            (Method::GET, "/status"),
            (Method::POST, "/events"),
            (Method::GET, "/"),
        ] {
            assert!(!is_allowed(&method, path), "{method} {path}");
        }
    }
}
