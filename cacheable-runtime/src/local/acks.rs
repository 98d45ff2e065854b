//! Pushed acknowledgements: the invalidator's side of step 4 of the
//! protocol in the module docs of `local`, on a single Redis and on a
//! Redis Cluster.
//!
//! The acknowledgement set (`SADD`) stays the only thing an invalidation
//! trusts: this module only *wakes* a waiting invalidation so that it runs
//! the `WAIT` script as soon as an acknowledgement landed, instead of at the
//! next tick of a poll. Each Redis cache that has waited for another
//! instance once runs one listener task (a dedicated pub/sub connection)
//! subscribed to `{prefix}:local:acks:<reply id>`, a fresh id per
//! subscription. A message names that id in its `reply` field while the
//! subscription is confirmed; an acknowledging instance then publishes the
//! message id there, in the script that did the `SADD`, after it. The
//! listener wakes the waiter registered under that message id.
//!
//! On a Redis Cluster the listener subscribes on the master that serves
//! the registry's slot, as the tier's own subscription does: the `ACK`
//! script runs there (its keys share the registry's hash tag), so its
//! `PUBLISH` is delivered by that node without crossing the cluster bus.
//! After a failover the push still reaches the old node over the bus while
//! it lives; when it dies, the subscription closes and the listener
//! resubscribes on the slot's new master.
//!
//! A lost, late or never sent push (a listener reconnecting, an instance of
//! an older version or in another language that only does the `SADD`) costs
//! latency, never correctness: the waiter also re-checks on a fallback
//! timer, as before.
//!
//! Bound: one waiter per invalidation of this process that is waiting for
//! acknowledgements, removed when it returns (a drop guard).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::Notify;

use super::Background;
use super::channel::Link;
use super::scripts::{self, Keys};

/// The waiters of one cache and the state of its listener.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    state: Mutex<State>,
    /// The listener task: started on the first wait, told to end when the
    /// cache is dropped.
    task: Background,
}

#[derive(Debug, Default)]
struct State {
    /// The reply id the listener is subscribed under (confirmed), if any.
    reply: Option<String>,
    /// Waiting invalidations by message id.
    waiters: HashMap<String, Arc<Notify>>,
}

/// The registration of one waiting invalidation; unregisters on drop.
pub(crate) struct Waiter {
    acks: Arc<Acks>,
    msg_id: String,
    notify: Arc<Notify>,
    reply: String,
}

impl Waiter {
    /// The reply id to name in the message.
    pub(crate) fn reply(&self) -> &str {
        &self.reply
    }

    /// Resolves once an acknowledgement of the message was pushed since the
    /// last call (one stored permit: a push that came before is not lost),
    /// or the listener lost its subscription.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.acks.lock().waiters.remove(&self.msg_id);
    }
}

impl Acks {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A waiter for message `msg_id`, if the listener is subscribed now
    /// (otherwise the invalidation polls).
    pub(crate) fn waiter(self: &Arc<Self>, msg_id: &str) -> Option<Waiter> {
        let mut state = self.lock();
        let reply = state.reply.clone()?;
        let notify = Arc::new(Notify::new());
        state.waiters.insert(msg_id.to_owned(), Arc::clone(&notify));
        Some(Waiter {
            acks: Arc::clone(self),
            msg_id: msg_id.to_owned(),
            notify,
            reply,
        })
    }

    /// An acknowledgement of `msg_id` was pushed.
    fn wake(&self, msg_id: &[u8]) {
        let Ok(msg_id) = std::str::from_utf8(msg_id) else {
            return;
        };
        if let Some(n) = self.lock().waiters.get(msg_id) {
            n.notify_one();
        }
    }

    /// The listener is subscribed under `reply`, or (`None`) not any more:
    /// the waiters re-check now and then rely on their fallback timers.
    fn set_reply(&self, reply: Option<String>) {
        let mut state = self.lock();
        if reply.is_none() {
            for n in state.waiters.values() {
                n.notify_one();
            }
        }
        state.reply = reply;
    }

    /// Starts the listener on the current runtime, once.
    pub(crate) fn start(self: &Arc<Self>, link: &Link, keys: &Keys, op: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(rx) = self.task.start() else {
            return;
        };
        runtime.spawn(listen(
            Arc::downgrade(self),
            link.clone(),
            keys.clone(),
            op,
            rx,
        ));
    }
}

/// Subscribes, routes pushes to waiters, resubscribes (with a fresh reply
/// id) when the subscription is lost; ends when the cache is dropped.
async fn listen(
    acks: Weak<Acks>,
    link: Link,
    keys: Keys,
    op: Duration,
    mut closed: tokio::sync::oneshot::Receiver<()>,
) {
    const FIRST: Duration = Duration::from_millis(20);
    // A half-open connection is found by a ping this often (it only costs
    // the waiters their wake-ups meanwhile).
    const PING: Duration = Duration::from_secs(5);
    let mut pause = FIRST;
    loop {
        if let Some(pubsub) = tokio::time::timeout(op, link.pubsub(&keys.registry))
            .await
            .ok()
            .and_then(Result::ok)
        {
            let (mut sink, stream) = pubsub.split();
            let mut stream = Box::pin(stream);
            let reply = scripts::new_id();
            let subscribed = tokio::time::timeout(op, sink.subscribe(keys.reply_channel(&reply)))
                .await
                .is_ok_and(|r| r.is_ok());
            if subscribed {
                match acks.upgrade() {
                    Some(a) => a.set_reply(Some(reply)),
                    None => return,
                }
                pause = FIRST;
                let mut ping = tokio::time::Instant::now() + PING;
                loop {
                    tokio::select! {
                        _ = &mut closed => return,
                        msg = next(stream.as_mut()) => {
                            let Some(msg) = msg else { break };
                            match acks.upgrade() {
                                Some(a) => a.wake(msg.get_payload_bytes()),
                                None => return,
                            }
                        }
                        () = tokio::time::sleep_until(ping) => {
                            let pong = tokio::time::timeout(op, sink.ping::<redis::Value>()).await;
                            if !pong.is_ok_and(|r| r.is_ok()) {
                                break;
                            }
                            ping = tokio::time::Instant::now() + PING;
                        }
                    }
                }
                match acks.upgrade() {
                    Some(a) => a.set_reply(None),
                    None => return,
                }
                tracing::debug!("acknowledgement listener lost its subscription; reconnecting");
            }
        }
        tokio::select! {
            _ = &mut closed => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

async fn next<S: Stream + ?Sized>(mut stream: Pin<&mut S>) -> Option<S::Item> {
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}
