//! The consent reply the supervisor awaits from an actor notifier, and
//! [`Poller`], the future that polls it and times it out.
//!
//! The request is kept in the supervisor ([`ReplySlot`]) rather than
//! spawned as a future of its own: a spawned future per consent cost a
//! box, its spawn bookkeeping and one more pass of actix over all the
//! spawned items (where a `run_later` deadline timer was polled too) before
//! the request was first polled. The poller that hears a reply goes on with
//! the round, which sends the next request, and polls that one in the same
//! call: a walk of actor notifiers spawns one poller (zero-sized, so its
//! box allocates nothing), and the deadline timer is polled once per
//! request that has to be waited for.

use std::future::Future;
use std::pin::Pin;
use std::task::{self, Poll};

use actix::dev::RecipientRequest;
use actix::prelude::*;
use lwsys_messages::state::{Consent, Verdict};

use super::Supervisor;

/// The consent reply being awaited: from notifier `id`, asked at
/// `since`; the request itself is in the [`ReplySlot`].
#[derive(Clone, Copy)]
pub(super) struct Awaiting {
    pub(super) id: u64,
    pub(super) since: tokio::time::Instant,
}

/// Where the awaited request is kept. A request future cannot be moved
/// once polled, so it lives in a box; the box is allocated once, with the
/// first request, and each request after is put in its place.
#[derive(Default)]
pub(super) struct ReplySlot(Option<Pin<Box<Option<RecipientRequest<Consent>>>>>);

impl ReplySlot {
    /// Keep `reply`, dropping (cancelling) the one kept before.
    fn put(&mut self, reply: RecipientRequest<Consent>) {
        match self.0.as_mut() {
            Some(slot) => slot.set(Some(reply)),
            None => self.0 = Some(Box::pin(Some(reply))),
        }
    }

    /// Drop (cancel) the request kept, if any.
    fn clear(&mut self) {
        if let Some(slot) = self.0.as_mut() {
            slot.set(None);
        }
    }

    fn poll(&mut self, task: &mut task::Context<'_>) -> Poll<Result<Verdict, MailboxError>> {
        match self.0.as_mut().and_then(|slot| slot.as_mut().as_pin_mut()) {
            Some(reply) => Future::poll(reply, task),
            None => Poll::Ready(Err(MailboxError::Closed)),
        }
    }
}

/// Polls the awaited reply and its deadline, and hands the outcome to
/// `Supervisor::on_consent`, for as long as a reply is awaited; then it
/// ends. Spawned by `Supervisor::ask` when a request is sent from outside
/// a poller; a request sent from inside one (the round going on after a
/// reply) is that poller's to poll.
pub(super) struct Poller;

impl ActorFuture<Supervisor> for Poller {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Supervisor,
        ctx: &mut Context<Supervisor>,
        task: &mut task::Context<'_>,
    ) -> Poll<()> {
        act.polling = true;
        let p = act.poll_awaited(ctx, task);
        act.polling = false;
        p
    }
}

impl Supervisor {
    /// Await `reply` from the notifier `id` (see the module docs).
    pub(super) fn await_reply(
        &mut self,
        id: u64,
        reply: RecipientRequest<Consent>,
        ctx: &mut Context<Self>,
    ) {
        self.reply.put(reply);
        self.awaiting = Some(Awaiting { id, since: tokio::time::Instant::now() });
        if !self.polling {
            ctx.spawn(Poller);
        }
    }

    /// Poll the awaited reply; on an answer (or a timeout), go on with the
    /// round and poll the next request it sends, until one must be waited
    /// for (pending) or none is awaited (ready).
    fn poll_awaited(&mut self, ctx: &mut Context<Self>, task: &mut task::Context<'_>) -> Poll<()> {
        loop {
            if self.awaiting.is_none() {
                // Whoever stopped awaiting it left the request here.
                self.reply.clear();
                return Poll::Ready(());
            }
            let res = match self.reply.poll(task) {
                Poll::Ready(res) => res,
                Poll::Pending if self.deadline_passed(task) => Err(MailboxError::Timeout),
                Poll::Pending => return Poll::Pending,
            };
            self.on_consent(res, ctx);
        }
    }

    /// Whether the awaited reply's deadline has passed; otherwise the
    /// timer is armed to wake the supervisor at it. One timer serves a
    /// whole walk: fired for an earlier request, it is moved on to this
    /// one's deadline. Dropped once nothing is awaited (the end of
    /// `Supervisor::pump`), so an idle daemon never wakes.
    fn deadline_passed(&mut self, task: &mut task::Context<'_>) -> bool {
        let Some(a) = self.awaiting.as_ref() else { return false };
        let due = a.since + self.cfg.consent_timeout;
        let timer = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if Future::poll(timer.as_mut(), task).is_pending() {
            return false;
        }
        if timer.deadline() >= due {
            return true;
        }
        timer.as_mut().reset(due);
        Future::poll(timer.as_mut(), task).is_ready()
    }
}
