//! Blocking queries (Consul-style watches) on a service's instance set: answer at once when
//! the service's change index differs from the caller's, else hold until it changes, the wait
//! ends, or the registry closes for shutdown.
//!
//! A held query costs one subscription to the service's existing watch channel plus the
//! request's own future: no task, no timer wheel entry beyond its one sleep.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch as channel;

use super::{check_name, Instance, Registry, RegistryError};

/// A service's instances at a change index. An unknown service is an empty set at index 0.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// Grows with every published change of the set; 0 = never published.
    pub index: u64,
    pub instances: Vec<Instance>,
}

/// Why a blocking query was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(
        "{open} blocking queries are open, the most [registry].max_watches allows; retry later"
    )]
    TooMany { open: usize },
}

/// One held blocking query; frees its slot when dropped (the query answered, or its client
/// went away and hyper dropped the future).
struct WatchSlot<'a>(&'a Registry);

impl Drop for WatchSlot<'_> {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a blocking query waits on: the service's own channel, or, while it does not exist,
/// the registry-wide first-publish signal.
enum Waiter {
    Service(channel::Receiver<super::EndpointSet>),
    Appears(channel::Receiver<()>),
}

impl Waiter {
    async fn changed(&mut self) {
        // Err: the sender was dropped (the store removed the service). Returning lets the
        // caller re-read the view, which then differs (index 0) or re-subscribes.
        let _ = match self {
            Waiter::Service(rx) => rx.changed().await,
            Waiter::Appears(rx) => rx.changed().await,
        };
    }
}

impl Registry {
    /// The instances of `service` and its change index; an unknown (valid) name is an empty
    /// set at index 0, so a client can wait for a service that has not registered yet.
    pub fn view(&self, service: &str) -> Result<ServiceView, RegistryError> {
        check_name("service", service, 64)?;
        Ok(self.view_and_waiter(service).0)
    }

    fn view_and_waiter(&self, service: &str) -> (ServiceView, Waiter) {
        // One lock for both, so no publish can fall between the read and the subscription.
        let services = self.lock();
        match services.get(service) {
            Some(entry) => (
                ServiceView {
                    index: entry.index,
                    instances: entry.instances.values().cloned().collect(),
                },
                Waiter::Service(entry.tx.subscribe()),
            ),
            None => (
                ServiceView {
                    index: 0,
                    instances: Vec::new(),
                },
                Waiter::Appears(self.clock.first_publish.subscribe()),
            ),
        }
    }

    /// Blocking query: the view once its index differs from `index`, or the current one when
    /// `wait` (cut to `max_wait`) elapses or the registry closes. An index greater than the
    /// current one (the caller saw another registry, or this one before a restart) answers at
    /// once too. At most `max_watches` are held at once; past that, [`WatchError::TooMany`].
    pub async fn wait_for_change(
        &self,
        service: &str,
        index: u64,
        wait: Duration,
    ) -> Result<ServiceView, WatchError> {
        check_name("service", service, 64)?;
        let (view, mut waiter) = self.view_and_waiter(service);
        let mut closing = self.closing.subscribe();
        if view.index != index || *closing.borrow_and_update() {
            return Ok(view);
        }
        let _slot = self.watch_slot()?;
        let deadline = tokio::time::Instant::now() + wait.min(self.config.max_wait);
        loop {
            tokio::select! {
                () = waiter.changed() => {}
                () = tokio::time::sleep_until(deadline) => break,
                // Err: the registry is being dropped; answer with what it holds now.
                _ = closing.wait_for(|closed| *closed) => break,
            }
            let (view, next) = self.view_and_waiter(service);
            if view.index != index {
                return Ok(view);
            }
            // Woken without a change of this service (another service appeared, or the set
            // was re-sent): keep waiting, on the service's channel if it exists now.
            waiter = next;
        }
        Ok(self.view_and_waiter(service).0)
    }

    fn watch_slot(&self) -> Result<WatchSlot<'_>, WatchError> {
        let max = self.config.max_watches;
        self.watches
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < max).then_some(open + 1)
            })
            .map(|_| WatchSlot(self))
            .map_err(|open| {
                self.watches_refused.fetch_add(1, Ordering::Relaxed);
                WatchError::TooMany { open }
            })
    }

    /// Blocking queries held open now.
    pub fn open_watches(&self) -> usize {
        self.watches.load(Ordering::Relaxed)
    }

    /// Blocking queries refused since start because `max_watches` were open.
    pub fn refused_watches(&self) -> u64 {
        self.watches_refused.load(Ordering::Relaxed)
    }

    /// Answers every held blocking query now and stops new ones from blocking, so a graceful
    /// drain of the admin listener is not held up by watches (gateway shutdown calls it).
    pub fn close_watches(&self) {
        self.closing.send_replace(true);
    }
}
