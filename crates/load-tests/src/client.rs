//! One request of the contract, sent through goose so it is timed and
//! counted, with the statuses the scenario expects. A status outside them,
//! a transport error or a body of the wrong shape is marked failed with a
//! tag naming the kind, which is how goose's errors table groups them.

use goose::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What came back: the status and the parsed JSON body (Null when empty).
pub struct Reply {
    pub status: u16,
    pub body: Value,
    metric: goose::metrics::GooseRequestMetric,
}

impl Reply {
    /// Reads the body as `T`; a body of the wrong shape fails the request.
    pub fn parse<T: DeserializeOwned>(
        &mut self,
        user: &mut GooseUser,
    ) -> Result<T, Box<TransactionError>> {
        match serde_json::from_value(self.body.clone()) {
            Ok(parsed) => Ok(parsed),
            Err(e) => Err(self.fail(user, &format!("wrong body: {e}"))),
        }
    }

    /// Marks this request failed (a broken promise of the contract) and
    /// returns the error that ends the transaction.
    pub fn fail(&mut self, user: &mut GooseUser, tag: &str) -> Box<TransactionError> {
        let _ = user.set_failure(tag, &mut self.metric, None, None);
        Box::new(TransactionError::Custom(tag.to_owned()))
    }
}

/// A request: method, path, the name it is reported under (the route
/// pattern), an optional token and body, and the statuses that are success.
pub struct Call<'a> {
    pub method: GooseMethod,
    pub path: &'a str,
    pub name: &'a str,
    pub token: Option<&'a str>,
    pub body: Option<Value>,
    pub expect: &'a [u16],
}

impl<'a> Call<'a> {
    /// Reported under its path unless [`Call::named`] says otherwise.
    pub fn new(method: GooseMethod, path: &'a str, expect: &'a [u16]) -> Self {
        Call {
            method,
            path,
            name: path,
            token: None,
            body: None,
            expect,
        }
    }

    pub fn named(mut self, name: &'a str) -> Self {
        self.name = name;
        self
    }

    pub fn token(mut self, token: &'a str) -> Self {
        self.token = Some(token);
        self
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Sends the request. Err when it failed (already recorded by goose).
    pub async fn send(self, user: &mut GooseUser) -> Result<Reply, Box<TransactionError>> {
        let mut builder = user.get_request_builder(&self.method, self.path)?;
        if let Some(token) = self.token {
            builder = builder.bearer_auth(token);
        }
        if let Some(body) = &self.body {
            builder = builder
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let primary = self.expect.first().copied().unwrap_or(200);
        let request = GooseRequest::builder()
            .method(self.method)
            .path(self.path)
            .name(self.name)
            .expect_status_code(primary)
            .set_request_builder(builder)
            .build();
        let goose = user.request(request).await?;
        let mut metric = goose.request;
        crate::latency_log::observe(
            metric.elapsed,
            &format!("{} {}", metric.raw.method, self.name),
            metric.response_time,
        );
        let response = match goose.response {
            Ok(response) => response,
            Err(e) => {
                let tag = if e.is_timeout() {
                    "timeout"
                } else {
                    "transport error"
                };
                let _ = user.set_failure(tag, &mut metric, None, None);
                return Err(Box::new(TransactionError::Custom(tag.to_owned())));
            }
        };
        let status = response.status().as_u16();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(_) => {
                let _ = user.set_failure("body cut short", &mut metric, None, None);
                return Err(Box::new(TransactionError::Custom("body cut short".into())));
            }
        };
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        let mut reply = Reply {
            status,
            body,
            metric,
        };
        if !self.expect.contains(&status) {
            let kind = if status >= 500 {
                "5xx"
            } else {
                "unexpected status"
            };
            return Err(reply.fail(user, &format!("{kind} {status} for {}", self.name)));
        }
        if !reply.metric.success {
            user.set_success(&mut reply.metric)?;
        }
        Ok(reply)
    }
}
