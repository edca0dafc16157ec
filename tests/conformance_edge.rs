//! The conformance suite (`tests/conformance/`) against the edge node, in this process.

mod common;
mod conformance;

use conformance::Host;

conformance_cases!(Host::edge);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_address_are_paced() {
    let node = common::TestNode::start(|c| {
        c.conns_per_ip_burst = conformance::PACED_BURST;
        c.conns_per_ip_per_sec = 1;
    })
    .await;
    conformance::connections_from_one_address_are_paced(&conformance::Target::new(node.addr)).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_pays_checkouts() {
    let fake = conformance::fake_stripe::Fake::start().await;
    let node = common::TestNode::start(|c| {
        c.payments.provider = liveshop_edge::config::ProviderName::Stripe;
        c.payments.stripe_api_base = fake.base.clone();
        c.payments.stripe_secret_key = Some(conformance::fake_stripe::SECRET_KEY.into());
        c.payments.stripe_webhook_secret = Some(conformance::STRIPE_WEBHOOK_SECRET.into());
    })
    .await;
    conformance::stripe_pays_checkouts(&conformance::Target::new(node.addr), &fake).await;
    node.stop().await;
}
