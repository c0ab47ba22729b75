//! Writing the gateway's JSON answers: a message, a stream of `{"result":…}` lines, and
//! grpc-gateway v1's error bodies with the HTTP status of the gRPC code.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tonic::codec::Streaming;
use tonic::{Code, Status};

pub(super) fn json_response<T: Serialize>(message: &T) -> Response {
    match serde_json::to_vec(message) {
        Ok(json) => json_body(StatusCode::OK, json),
        Err(error) => error_response(&Status::internal(format!("encoding the answer: {error}"))),
    }
}

pub(super) fn json_body(status: StatusCode, json: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(json),
    )
        .into_response()
}

/// grpc-gateway v1's error answer: `{"error":…,"code":…,"message":…}` with the HTTP status
/// of the gRPC code.
pub fn error_response(status: &Status) -> Response {
    let body = ErrorBody {
        error: status.message(),
        message: status.message(),
        code: i32::from(status.code()),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    json_body(http_status(status.code()), json)
}

/// In etcd's order: `error`, `message`, `code`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    code: i32,
}

/// grpc-gateway v1's `HTTPStatusFromCode`.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// One `{"result":…}` line per answer; a failed stream ends with grpc-gateway v1's
/// `{"error":{"grpc_code":…,"http_code":…,"message":…,"http_status":…}}` line.
pub(super) fn stream_response<T: Serialize + Send + 'static>(answers: Streaming<T>) -> Response {
    let lines = stream::unfold(Some(answers), |answers| async move {
        let mut answers = answers?;
        match answers.next().await? {
            Ok(answer) => Some((result_line(&answer), Some(answers))),
            Err(status) => Some((error_line(&status), None)),
        }
    });
    let body = Body::from_stream(lines.map(Ok::<Bytes, Infallible>));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

pub(super) fn result_line<T: Serialize>(answer: &T) -> Bytes {
    match serde_json::to_vec(&ResultLine { result: answer }) {
        Ok(mut line) => {
            line.push(b'\n');
            line.into()
        }
        Err(error) => error_line(&Status::internal(format!("encoding the answer: {error}"))),
    }
}

pub(super) fn error_line(status: &Status) -> Bytes {
    let http = http_status(status.code());
    let line = ErrorLine {
        error: StreamError {
            grpc_code: i32::from(status.code()),
            http_code: http.as_u16(),
            message: status.message(),
            http_status: http.canonical_reason().unwrap_or(""),
        },
    };
    let mut json = serde_json::to_vec(&line).unwrap_or_default();
    json.push(b'\n');
    json.into()
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    error: StreamError<'a>,
}

#[derive(Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    message: &'a str,
    http_status: &'a str,
}

#[derive(Serialize)]
struct ResultLine<'a, T> {
    result: &'a T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_are_grpc_gateways() {
        assert_eq!(http_status(Code::OutOfRange), StatusCode::BAD_REQUEST);
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(http_status(Code::Cancelled), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
