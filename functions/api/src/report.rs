//! `GET /v1/shows/{show}/analytics[?previous=N]` and `/v1/shows/{show}/analytics/{file}`: what a
//! report request asks for and who may ask. Hosts fetch the room's and the shop's halves for the
//! reader and join them with [`liveshop_analytics::Report`].

use liveshop_analytics::Report;
use liveshop_identity::{Identity, TokenError};
use liveshop_room::show::Show;

use crate::ApiError;

/// Writes one of a report's CSV files.
pub type CsvWriter = fn(&Report) -> String;

/// What a report request asks for: the JSON report with `previous` earlier shows, or a CSV file
/// (its name and writer).
pub struct ReportAsk {
    pub csv: Option<(String, CsvWriter)>,
    pub previous: usize,
}

impl ReportAsk {
    /// The request's file (`None` for the JSON report) and query, or why not.
    pub fn parse(file: Option<&str>, query: &str) -> Result<ReportAsk, ApiError> {
        let previous =
            liveshop_analytics::parse_query(query).map_err(|m| ApiError::new(400, "invalid_argument", m))?;
        match file {
            None => Ok(ReportAsk { csv: None, previous }),
            Some(name) => match liveshop_analytics::csv_file(name) {
                Some(write) => Ok(ReportAsk { csv: Some((name.to_string(), write)), previous: 0 }),
                None => Err(ApiError::new(404, "not_found", "no such file")),
            },
        }
    }

    /// The answer's headers and body for `report` (its `previous` filled in for JSON); neither
    /// is kept by caches.
    pub fn answer(&self, show: &str, report: &Report) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let no_store = ("cache-control", "no-store".to_string());
        match &self.csv {
            Some((file, write)) => (
                vec![
                    ("content-type", "text/csv; charset=utf-8".into()),
                    ("content-disposition", format!("attachment; filename=\"{show}-{file}\"")),
                    no_store,
                ],
                write(report).into_bytes(),
            ),
            None => (
                vec![("content-type", "application/json".into()), no_store],
                serde_json::to_vec(report).expect("a report serializes"),
            ),
        }
    }
}

/// Who asks for `show`'s report with `token`: its host (a token for the show) or the merchant of
/// its shop (a token for the shop); `verify` checks a token for a room or shop.
pub fn reader(
    show: &Show,
    token: Option<&str>,
    verify: impl Fn(&str, &str) -> Result<Identity, TokenError>,
) -> Result<Identity, ApiError> {
    let token = token.ok_or_else(|| ApiError::token(TokenError::Malformed))?;
    let who = match verify(token, &show.id) {
        Err(TokenError::WrongRoom) if show.shop_id() != show.id => verify(token, show.shop_id()),
        verified => verified,
    }
    .map_err(ApiError::token)?;
    if !liveshop_analytics::may_read(who.role) {
        return Err(ApiError::new(
            403,
            "forbidden",
            "the report is for the show's host and the shop's merchant",
        ));
    }
    Ok(who)
}

#[cfg(test)]
mod tests {
    use liveshop_identity::{Claims, Role, Secret};
    use liveshop_room::show::NewShow;

    use super::*;

    #[test]
    fn the_host_of_the_show_and_the_merchant_of_its_shop_read_its_report() {
        let secret = Secret::new(b"a test secret that is long enough".to_vec()).unwrap();
        let new: NewShow = serde_json::from_value(serde_json::json!({
            "id": "spring", "title": "Spring drop", "shop": "acme"
        }))
        .unwrap();
        let show = Show::new(new, 1_000).unwrap();
        let verify = |t: &str, scope: &str| secret.verify(t, scope, 1_000);
        let token = |scope: &str, role| secret.mint(&Claims::new("ana", scope, role, 2_000)).unwrap();
        for (scope, role) in [("spring", Role::Host), ("acme", Role::Merchant)] {
            let who = reader(&show, Some(&token(scope, role)), verify).unwrap();
            assert_eq!(who.role, role);
        }
        let refused = |t: Option<&str>| reader(&show, t, verify).unwrap_err();
        assert_eq!(refused(Some(&token("spring", Role::Viewer))).status, 403);
        assert_eq!(refused(Some(&token("acme", Role::Moderator))).code, "forbidden");
        assert_eq!(refused(Some(&token("elsewhere", Role::Host))).code, "token_wrong_room");
        assert_eq!(refused(None).code, "token_malformed");
    }

    #[test]
    fn a_request_asks_for_the_json_report_or_a_known_csv_file() {
        let json = ReportAsk::parse(None, "previous=2").unwrap();
        assert_eq!((json.csv.is_none(), json.previous), (true, 2));
        let csv = ReportAsk::parse(Some("minutes.csv"), "").unwrap();
        assert_eq!((csv.csv.as_ref().map(|(f, _)| f.as_str()), csv.previous), (Some("minutes.csv"), 0));
        assert_eq!(ReportAsk::parse(Some("orders.csv"), "").err().map(|e| e.status), Some(404));
        assert_eq!(ReportAsk::parse(None, "previous=99").err().map(|e| e.code), Some("invalid_argument"));
    }
}
