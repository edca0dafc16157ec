//! A show's sales measures ([`crate::analytics`]): read by its staff, and told to the merchant
//! when the show ends (`show.report_ready`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

use super::inputs::{decode, url};
use super::{Call, Handled, reply};
use crate::Shop;
use crate::protocol::{ApiError, ErrorCode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportReadyInput {
    report_url: String,
    analytics_url: String,
}

impl Shop {
    /// `GET /analytics/{show}`: the show's sales, empty for a show that sold nothing here.
    pub(super) fn show_sales(&self, c: &Call, show: &str) -> Handled {
        c.staff()?;
        // Through a show's route, a show's host reads that show only.
        if c.show().is_some_and(|through| through != show) {
            return Err(ApiError::new(ErrorCode::Forbidden, "your token is for another show"));
        }
        let mut sales = self.state.analytics.get(show).cloned().unwrap_or_default();
        // How many buyers, not who they are.
        let buyers = std::mem::take(&mut sales.buyers).len();
        // The catalog's titles of what the show sold, for the report's product table.
        let titles: BTreeMap<&str, &str> = sales
            .slots
            .values()
            .flat_map(|s| s.products.keys())
            .filter_map(|id| Some((id.as_str(), self.state.products.get(id)?.title.as_str())))
            .collect();
        let currency = self.state.settings.currency;
        let answer = json!({
            "now": c.now, "show": show, "currency": currency, "sales": sales, "buyers": buyers, "titles": titles,
        });
        reply(200, &answer)
    }

    /// `POST /analytics/{show}/report-ready`: the host says the show ended; the merchant gets
    /// `show.report_ready` with where to read the report and the sales in total.
    pub(super) fn report_ready(&mut self, c: &Call, show: &str) -> Handled {
        c.merchant()?;
        let input: ReportReadyInput = decode(c.body)?;
        let totals = self.state.analytics.get(show).map(|s| s.totals()).unwrap_or_default();
        let data = json!({
            "show": show,
            "ended_at": c.now,
            "report_url": url(&input.report_url, "report_url")?,
            "analytics_url": url(&input.analytics_url, "analytics_url")?,
            "sales": totals,
        });
        self.webhook(c.now, "show.report_ready", &data);
        reply(202, &data)
    }
}
