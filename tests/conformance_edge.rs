//! The conformance suite (`tests/conformance/`) against the edge node, in this process.

mod common;
mod conformance;

use conformance::Host;

conformance_cases!(Host::edge);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_webhooks_are_refused_without_the_setting() {
    let node = common::TestNode::start(|c| c.webhooks.allow_private_hosts.clear()).await;
    conformance::loopback_webhooks_are_refused_without_the_setting(&conformance::Target::new(node.addr))
        .await;
    node.stop().await;
}

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
async fn guests_and_commands_from_one_address_are_limited() {
    let node = common::TestNode::start(|c| {
        c.guest_devices_per_ip_burst = conformance::GUEST_DEVICES_BURST;
        c.guest_devices_per_ip_per_hour = 1;
        c.commands_per_ip_burst = conformance::COMMANDS_BURST;
        c.commands_per_ip_per_sec = 1;
    })
    .await;
    conformance::guests_and_commands_from_one_address_are_limited(&conformance::Target::new(node.addr)).await;
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

/// A platform operator the node's config names may sell from any shop; nobody else may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_named_in_the_config_sell_from_any_shop() {
    let node = common::TestNode::start(|c| c.operators = vec!["ops".into()]).await;
    let t = conformance::Target::new(node.addr);
    let shop = t.new_show().await;
    let body =
        serde_json::json!({ "id": format!("{shop}-ops"), "title": "Run by ops", "shop": shop }).to_string();
    for (subject, status) in [("someone", 403), ("ops", 201)] {
        let auth = format!("Bearer {}", common::token("*", subject, liveshop_identity::Role::Host));
        let (got, answer) = t.http("POST", "/v1/shows", &[("Authorization", &auth)], &body).await;
        assert_eq!(got, status, "{subject}: {answer}");
    }
    node.stop().await;
}
