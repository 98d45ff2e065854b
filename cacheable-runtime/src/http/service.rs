//! The one tower service behind the layers that rewrite a response
//! ([`ConditionalLayer`](super::ConditionalLayer), [`FieldsLayer`](super::FieldsLayer)):
//! [`AfterResponse`] reads what it needs from the request, calls the inner
//! service, and hands the response to a [`ResponseStep`]; and `buffer`,
//! the bounded body buffering both need.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt as _;
use tower_service::Service;

/// What a layer does around its inner service. Sealed: implemented by this
/// crate's layers only.
pub trait ResponseStep: Clone + Send + 'static + sealed::Sealed {
    /// What is read from the request before it moves on.
    type Seen: Send + 'static;
    /// Reads it.
    fn see<B>(&self, req: &Request<B>) -> Self::Seen;
    /// Rewrites the inner service's response.
    fn after(
        self,
        seen: Self::Seen,
        res: Response<Body>,
    ) -> impl Future<Output = Response<Body>> + Send;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::super::conditional::ConditionalStep {}
    impl Sealed for super::super::fields::FieldsStep {}
}

/// The service of a response-rewriting layer: `inner`, then `step`.
#[derive(Clone, Debug)]
pub struct AfterResponse<S, A> {
    inner: S,
    step: A,
}

impl<S, A> AfterResponse<S, A> {
    pub(crate) fn new(inner: S, step: A) -> Self {
        Self { inner, step }
    }
}

/// The boxed future of [`AfterResponse`].
pub type AfterResponseFuture<E> =
    Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send + 'static>>;

impl<S, A, ReqB, ResB> Service<Request<ReqB>> for AfterResponse<S, A>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    A: ResponseStep,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = AfterResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let seen = self.step.see(&req);
        let step = self.step.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?.map(Body::new);
            Ok(step.after(seen, res).await)
        })
    }
}

/// Reads `body` up to `max` bytes. `Err` hands back a body that replays what
/// was read and then continues the stream (larger body, trailers or an error).
pub(crate) async fn buffer(mut body: Body, max: usize) -> Result<Bytes, Replay> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let replay = |chunks: Vec<Bytes>, extra: Option<Frame<Bytes>>, err, rest| {
        let mut head: VecDeque<Frame<Bytes>> = chunks.into_iter().map(Frame::data).collect();
        head.extend(extra);
        Replay { head, err, rest }
    };
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    total = total.saturating_add(data.len());
                    chunks.push(data);
                    if total > max {
                        return Err(replay(chunks, None, None, Some(body)));
                    }
                }
                Err(trailers) => return Err(replay(chunks, Some(trailers), None, Some(body))),
            },
            Some(Err(e)) => return Err(replay(chunks, None, Some(e), None)),
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(total);
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    })
}

/// A body that yields frames already read, then the rest of the original body.
#[derive(Debug)]
pub(crate) struct Replay {
    head: VecDeque<Frame<Bytes>>,
    err: Option<axum::Error>,
    rest: Option<Body>,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(frame) = this.head.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(e) = this.err.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match &mut this.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty()
            && self.err.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }
}
