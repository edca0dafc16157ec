//! The conformance suite (`tests/conformance/`) against the Cloudflare Worker in workerd (from
//! npm, local, persistence in a temporary directory, no login, no metrics). Needs the Worker
//! built (`functions/cloudflare/build.sh`); without it the cases are skipped, unless
//! `LIVESHOP_REQUIRE_WORKERD` is set (as `.ci/run` does).

mod common;
mod conformance;

use conformance::Host;

conformance_cases!(Host::workerd);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_orders_survive_a_restart_over_the_same_persistence_dir() {
    conformance::rooms_and_orders_survive_a_restart(|dir| conformance::Workerd::start(dir, &[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_orders_survive_a_wrangler_dev_restart() {
    conformance::rooms_and_orders_survive_a_restart(conformance::Workerd::start_wrangler_dev).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_viewer_on_every_fanout_object_sees_every_event_in_order() {
    conformance::every_viewer_on_every_fanout_object_sees_every_event_in_order().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_webhooks_are_refused_without_the_setting() {
    if !conformance::Workerd::built() {
        assert!(std::env::var_os("LIVESHOP_REQUIRE_WORKERD").is_none(), "the Worker is not built");
        return eprintln!("skipped: the Worker is not built (functions/cloudflare/build.sh)");
    }
    let w = conformance::Workerd::start(
        &common::temp_dir("workerd-strict"),
        &[("WEBHOOK_ALLOW_PRIVATE_HOSTS", "")],
    );
    conformance::loopback_webhooks_are_refused_without_the_setting(&conformance::Target::new(w.addr)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_address_are_paced() {
    if !conformance::Workerd::built() {
        assert!(std::env::var_os("LIVESHOP_REQUIRE_WORKERD").is_none(), "the Worker is not built");
        return eprintln!("skipped: the Worker is not built (functions/cloudflare/build.sh)");
    }
    let burst = conformance::PACED_BURST.to_string();
    let vars = [("CONNS_PER_IP_BURST", burst.as_str()), ("CONNS_PER_IP_PER_SEC", "1")];
    let w = conformance::Workerd::start(&common::temp_dir("workerd-paced"), &vars);
    conformance::connections_from_one_address_are_paced(&conformance::Target::new(w.addr)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_and_commands_from_one_address_are_limited() {
    if !conformance::Workerd::built() {
        assert!(std::env::var_os("LIVESHOP_REQUIRE_WORKERD").is_none(), "the Worker is not built");
        return eprintln!("skipped: the Worker is not built (functions/cloudflare/build.sh)");
    }
    let (guests, commands) =
        (conformance::GUEST_DEVICES_BURST.to_string(), conformance::COMMANDS_BURST.to_string());
    let vars = [
        ("GUEST_DEVICES_PER_IP_BURST", guests.as_str()),
        ("GUEST_DEVICES_PER_IP_PER_HOUR", "1"),
        ("COMMANDS_PER_IP_BURST", commands.as_str()),
        ("COMMANDS_PER_IP_PER_SEC", "1"),
    ];
    let w = conformance::Workerd::start(&common::temp_dir("workerd-guests"), &vars);
    conformance::guests_and_commands_from_one_address_are_limited(&conformance::Target::new(w.addr)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_pays_checkouts() {
    if !conformance::Workerd::built() {
        assert!(std::env::var_os("LIVESHOP_REQUIRE_WORKERD").is_none(), "the Worker is not built");
        return eprintln!("skipped: the Worker is not built (functions/cloudflare/build.sh)");
    }
    let fake = conformance::fake_stripe::Fake::start().await;
    let vars = [
        ("PAYMENTS_PROVIDER", "stripe"),
        ("STRIPE_API_BASE", fake.base.as_str()),
        ("STRIPE_SECRET_KEY", conformance::fake_stripe::SECRET_KEY),
        ("STRIPE_WEBHOOK_SECRET", conformance::STRIPE_WEBHOOK_SECRET),
    ];
    let w = conformance::Workerd::start(&common::temp_dir("workerd-stripe"), &vars);
    conformance::stripe_pays_checkouts(&conformance::Target::new(w.addr), &fake).await;
}

/// The edge node refuses to start with a bad payments setting; a deployed Worker cannot, so its
/// shop answers what any failure the routes do not answer themselves gets: JSON, `internal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_payments_setting_is_a_json_error() {
    if !conformance::Workerd::built() {
        assert!(std::env::var_os("LIVESHOP_REQUIRE_WORKERD").is_none(), "the Worker is not built");
        return eprintln!("skipped: the Worker is not built (functions/cloudflare/build.sh)");
    }
    let w = conformance::Workerd::start(
        &common::temp_dir("workerd-bad-payments"),
        &[("PAYMENTS_PROVIDER", "paypal")],
    );
    let t = conformance::Target::new(w.addr);
    let show = t.new_show().await;
    let viewer = common::token(&show, "ana", liveshop_identity::Role::Viewer);
    let r = t
        .api
        .call("GET", &format!("/v1/shows/{show}/shop/catalog"), &viewer, None, serde_json::Value::Null)
        .await;
    assert_eq!((r.0, r.1["error"]["code"].as_str()), (500, Some("internal")), "{}", r.1);
}
