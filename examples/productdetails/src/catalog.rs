//! The demo's data and what each mock service answers for a path: product facts,
//! recommendations, reviews and prices, as JSON. Pure functions, so they are easy to test.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::ServiceKind;

/// One product of the demo catalog.
struct Product {
    id: u32,
    name: &'static str,
    brand: &'static str,
    category: &'static str,
    /// Price in cents, EUR.
    price_cents: u32,
}

// One product a line reads best as a table.
#[rustfmt::skip]
const PRODUCTS: &[Product] = &[
    Product { id: 42, name: "Aeropress Go Travel Coffee Press", brand: "Aeropress", category: "coffee", price_cents: 3995 },
    Product { id: 7, name: "V60 Dripper, ceramic, size 02", brand: "Hario", category: "coffee", price_cents: 2490 },
    Product { id: 8, name: "Buono Gooseneck Kettle 1.2 l", brand: "Hario", category: "coffee", price_cents: 4490 },
    Product { id: 9, name: "Skerton Pro Hand Grinder", brand: "Hario", category: "coffee", price_cents: 5990 },
    Product { id: 11, name: "Paper Filters 02, 100 pcs", brand: "Hario", category: "coffee", price_cents: 549 },
    Product { id: 12, name: "Drip Scale with Timer", brand: "Timemore", category: "coffee", price_cents: 4900 },
    Product { id: 13, name: "Chemex Six Cup Classic", brand: "Chemex", category: "coffee", price_cents: 4795 },
    Product { id: 14, name: "Espresso Beans, Ethiopia Guji 1 kg", brand: "Roastery 7", category: "coffee", price_cents: 3400 },
    Product { id: 15, name: "Insulated Travel Mug 350 ml", brand: "Fellow", category: "coffee", price_cents: 3200 },
    Product { id: 16, name: "Milk Frother, handheld", brand: "Bodum", category: "kitchen", price_cents: 1299 },
    Product { id: 17, name: "Cast Iron Skillet 26 cm", brand: "Lodge", category: "kitchen", price_cents: 3999 },
    Product { id: 18, name: "Chef's Knife 20 cm", brand: "Victorinox", category: "kitchen", price_cents: 5490 },
    Product { id: 19, name: "Bamboo Cutting Board", brand: "Totally Bamboo", category: "kitchen", price_cents: 2195 },
];

const REVIEWERS: &[&str] = &["Maya", "Jonas", "Priya", "Tomás", "Aiko", "Lena", "Omar"];

const REVIEW_TEXTS: &[(u8, &str)] = &[
    (5, "Does exactly what it promises. Would buy again."),
    (4, "Very good, a little pricey."),
    (5, "My daily companion for two years now."),
    (3, "Fine, but the box arrived dented."),
    (4, "Solid build, easy to clean."),
];

/// How many recommendations are given when the request does not say (`?top=`), and at most.
pub const TOP: usize = 10;

/// An answer: status and JSON body.
pub type Answer = (u16, Value);

fn product(id: &str) -> Option<&'static Product> {
    let id: u32 = id.parse().ok()?;
    PRODUCTS.iter().find(|p| p.id == id)
}

fn not_found(what: &str, id: &str) -> Answer {
    (
        404,
        json!({ "error": "not_found", "message": format!("no {what} for product {id}") }),
    )
}

fn euros(cents: u32) -> f64 {
    f64::from(cents) / 100.0
}

/// The answer of `service` to `GET path?query`; `user` is the caller's `x-user-id` (set by
/// the gateway from the JWT's `sub`).
pub fn answer(service: ServiceKind, path: &str, query: Option<&str>, user: Option<&str>) -> Answer {
    if path == "/health" {
        return (200, json!({ "status": "ok", "service": service.name() }));
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let id = match (service, segments.as_slice()) {
        (ServiceKind::ProductInfo, ["products", id])
        | (ServiceKind::Recommendations, ["recommendations", id])
        | (ServiceKind::Reviews, ["reviews", id])
        | (ServiceKind::Price, ["prices", id]) => *id,
        _ => {
            return (
                404,
                json!({ "error": "not_found", "message": format!("{} has no {path}", service.name()) }),
            )
        }
    };
    match service {
        ServiceKind::ProductInfo => product_info(id),
        ServiceKind::Recommendations => recommendations(id, top(query), user),
        ServiceKind::Reviews => reviews(id),
        ServiceKind::Price => price(id),
    }
}

fn top(query: Option<&str>) -> usize {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("top="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(TOP)
        .min(TOP)
}

fn product_info(id: &str) -> Answer {
    let Some(p) = product(id) else {
        return not_found("product", id);
    };
    (
        200,
        json!({
            "id": p.id,
            "name": p.name,
            "brand": p.brand,
            "category": p.category,
            "images": [format!("https://img.shop.example/products/{}/main.jpg", p.id)],
            "in_stock": p.id % 5 != 0,
        }),
    )
}

/// Same category first, then the rest; never the product itself.
fn recommendations(id: &str, top: usize, user: Option<&str>) -> Answer {
    let Some(p) = product(id) else {
        return not_found("recommendations", id);
    };
    let same = PRODUCTS.iter().filter(|q| q.category == p.category);
    let other = PRODUCTS.iter().filter(|q| q.category != p.category);
    let items: Vec<Value> = same
        .chain(other)
        .filter(|q| q.id != p.id)
        .take(top)
        .map(|q| json!({ "id": q.id, "name": q.name }))
        .collect();
    let mut body = json!({ "items": items });
    if let Some(user) = user {
        body["for_user"] = json!(user);
    }
    (200, body)
}

/// A few reviews picked from the id, so each product has its own but stable set.
fn reviews(id: &str) -> Answer {
    let Some(p) = product(id) else {
        return not_found("reviews", id);
    };
    let count = 2 + (p.id as usize % 3);
    let items: Vec<Value> = (0..count)
        .map(|i| {
            let (stars, text) = REVIEW_TEXTS[(p.id as usize + i) % REVIEW_TEXTS.len()];
            let author = REVIEWERS[(p.id as usize * 3 + i) % REVIEWERS.len()];
            json!({ "author": author, "stars": stars, "text": text })
        })
        .collect();
    let total: u32 = items
        .iter()
        .filter_map(|r| r["stars"].as_u64())
        .map(|s| s as u32)
        .sum();
    let average = f64::from(total * 10 / count as u32) / 10.0;
    (
        200,
        json!({ "average": average, "count": count, "items": items }),
    )
}

fn price(id: &str) -> Answer {
    let Some(p) = product(id) else {
        return not_found("price", id);
    };
    // When the price was read: a cached price served later shows its age here too.
    let as_of = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (
        200,
        json!({ "amount": euros(p.price_cents), "currency": "EUR", "as_of": as_of }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_answers_its_path() {
        let (s, body) = answer(ServiceKind::ProductInfo, "/products/42", None, None);
        assert_eq!(s, 200);
        assert_eq!(body["name"], "Aeropress Go Travel Coffee Press");

        let (s, body) = answer(
            ServiceKind::Recommendations,
            "/recommendations/42",
            Some("top=10"),
            Some("alice"),
        );
        assert_eq!(s, 200);
        let items = body["items"].as_array().expect("items");
        assert_eq!(items.len(), 10);
        assert!(
            items.iter().all(|i| i["id"] != 42),
            "never the product itself"
        );
        assert_eq!(items[0]["id"], 7, "same category first");
        assert_eq!(body["for_user"], "alice");
        let (_, body) = answer(
            ServiceKind::Recommendations,
            "/recommendations/42",
            Some("top=3"),
            None,
        );
        assert_eq!(body["items"].as_array().map(Vec::len), Some(3));

        let (s, body) = answer(ServiceKind::Reviews, "/reviews/42", None, None);
        assert_eq!(s, 200);
        assert_eq!(
            body["count"],
            body["items"].as_array().map(Vec::len).unwrap_or(0)
        );

        let (s, body) = answer(ServiceKind::Price, "/prices/42", None, None);
        assert_eq!(s, 200);
        assert_eq!(body["amount"], 39.95);
        assert_eq!(body["currency"], "EUR");
    }

    #[test]
    fn unknown_ids_and_paths_are_404() {
        for (kind, path) in [
            (ServiceKind::ProductInfo, "/products/99"),
            (ServiceKind::ProductInfo, "/products/abc"),
            (ServiceKind::Price, "/prices/99"),
            (ServiceKind::Price, "/products/42"),
            (ServiceKind::Reviews, "/reviews/42/extra"),
        ] {
            let (s, body) = answer(kind, path, None, None);
            assert_eq!(s, 404, "{path}");
            assert_eq!(body["error"], "not_found");
        }
        assert_eq!(answer(ServiceKind::Price, "/health", None, None).0, 200);
    }
}
