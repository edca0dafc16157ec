//! The conformance suite (`tests/conformance/`) against the Spin app (`functions/spin`) on this
//! repository's Spin host (`spin-host`): every case that needs no WebSocket itself; clients
//! follow rooms over server-sent events and send commands with `POST /commands`.

mod common;
mod conformance;

use conformance::Host;

conformance_cases!(@each Host::spin;
    chat_reaches_every_viewer_in_order,
    a_viewer_who_resumes_gets_exactly_what_it_missed,
    moderators_delete_time_out_and_ban,
    moderators_cannot_sanction_staff_even_offline,
    polls_count_one_vote_per_viewer,
    questions_are_asked_upvoted_once_answered_and_pinned,
    messages_and_products_are_pinned_and_seen_in_state,
    shows_are_created_once_and_read_back,
    commands_over_http_are_acknowledged_or_refused,
    an_sse_client_sees_what_websocket_clients_see_and_resumes_by_last_event_id,
    a_show_sells_only_from_a_shop_its_creator_owns,
    one_device_votes_once_whatever_its_guest_tokens,
    a_deal_per_buyer_cap_holds_per_device,
    a_verified_buyers_only_deal_refuses_guests,
    oversized_bodies_are_refused_with_the_json_error_shape,
    checkout_with_an_idempotency_key_makes_one_order,
    a_flash_sale_never_oversells,
    shop_errors_have_the_same_codes,
    coupon_codes_cannot_be_guessed,
    webhooks_are_signed_and_retried_on_schedule,
    webhook_endpoints_may_not_point_inside_the_node,
    a_rotated_webhook_secret_signs_beside_the_new_one,
    merchant_updates_are_applied_once_and_only_when_signed,
    shopify_product_webhooks_are_applied_once_and_only_when_signed,
    stripe_webhooks_are_not_found_where_stripe_is_not_used,
    the_feed_snapshot_shows_only_public_state,
    a_feed_request_after_a_position_answers_the_next_public_event,
    a_stream_of_events_reaches_a_feed_reader_in_a_few_answers,
    an_empty_feed_round_answers_wait_at_the_same_position,
    feed_answers_are_cacheable_and_revalidated_by_etag,
    heartbeats_count_feed_viewers_until_they_leave,
    a_nameless_guest_fills_a_cart,
    bad_feed_queries_and_unknown_shows_are_refused,
    the_live_product_feed_sends_a_snapshot_then_what_changed,
    a_shows_report_counts_its_audience_engagement_and_sales,
    the_web_pages_are_served,
    the_pages_carry_their_security_headers,
    the_timeline_keeps_what_was_shown_on_the_videos_clock
);

/// Payments through Stripe (the local stand-in of `conformance::fake_stripe`): charges leased and
/// carried out after the checkout committed, refunds, and signed webhooks settling later charges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_pays_checkouts() {
    let fake = conformance::fake_stripe::Fake::start().await;
    let addr = conformance::spin_host(
        &common::temp_dir("spin-stripe"),
        &[
            ("payments_provider", "stripe"),
            ("stripe_api_base", &fake.base),
            ("stripe_secret_key", conformance::fake_stripe::SECRET_KEY),
            ("stripe_webhook_secret", conformance::STRIPE_WEBHOOK_SECRET),
        ],
    );
    conformance::stripe_pays_checkouts(&conformance::Target::without_sockets(addr), &fake).await;
}
