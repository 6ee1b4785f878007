//! The hosts of one simulated service, each served on its own port and sharing one fault table
//! and one [`ApiDesk`]: what the provider sandboxes have in common (they deref to it).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;

use crate::api::{ApiDesk, ApiRequest};
use crate::faults::{Fault, Faults};
use crate::util;

pub struct Hosts {
    faults: Faults,
    api: ApiDesk,
    /// (real origin, where its double listens), in the order given.
    served: Vec<(&'static str, SocketAddr)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Hosts {
    /// Serves each `(real origin, address, router)`; the service's steps share `faults`, its
    /// data endpoints `api` (whose controls every host answers, see [`crate::api`]).
    pub(crate) async fn serve(
        faults: Faults,
        api: ApiDesk,
        hosts: Vec<(&'static str, &str, Router)>,
    ) -> std::io::Result<Hosts> {
        let (mut served, mut tasks) = (Vec::new(), Vec::new());
        for (origin, addr, router) in hosts {
            let router =
                router
                    .merge(crate::api::routes(api.clone()))
                    .layer(axum::middleware::from_fn(
                        move |request: axum::extract::Request, next: axum::middleware::Next| {
                            crate::faults::dress_redirects(origin, request, next)
                        },
                    ));
            let (local, task) = util::serve(addr, router).await?;
            served.push((origin, local));
            tasks.push(task);
        }
        Ok(Hosts {
            faults,
            api,
            served,
            tasks,
        })
    }

    /// Where the double of `origin` listens.
    pub fn addr_of(&self, origin: &str) -> SocketAddr {
        self.served
            .iter()
            .find(|(o, _)| *o == origin)
            .map(|(_, a)| *a)
            .expect("an origin this service simulates")
    }

    /// `REAL_ORIGIN=http://ADDR` pairs for `STEPGATE_UPSTREAMS`.
    pub fn upstreams(&self) -> String {
        self.served
            .iter()
            .map(|(origin, addr)| format!("{origin}=http://{addr}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Switches a fault on for a step (`"all"` for every step).
    pub fn set_fault(&self, step: &str, fault: Fault) {
        self.faults
            .set(step, fault, None)
            .expect("a step of this service");
    }

    /// Switches a fault on for the next `count` requests of a step.
    pub fn set_fault_times(&self, step: &str, fault: Fault, count: u32) {
        self.faults
            .set(step, fault, Some(count))
            .expect("a step of this service");
    }

    pub fn clear_faults(&self) {
        self.faults.clear();
    }

    /// Every answer waits this long first (see [`Faults::set_latency`]).
    pub fn set_latency(&self, latency: Duration) {
        self.faults.set_latency(latency);
    }

    /// See [`Faults::take_max_in_flight`].
    pub fn take_max_in_flight(&self) -> usize {
        self.faults.take_max_in_flight()
    }

    /// Every API token issued so far is refused by the data endpoints, while renewals still
    /// work (and their new tokens are taken); answers how many were issued.
    pub fn invalidate_api_tokens(&self) -> usize {
        self.api.invalidate()
    }

    /// The last request any of this service's data endpoints received, as received.
    pub fn last_api_request(&self) -> Option<ApiRequest> {
        self.api.last_request()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
