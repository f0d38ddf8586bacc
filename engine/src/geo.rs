//! Exact geo search. Points are stored as 3-D unit vectors in an R-tree: the chord between two
//! points grows monotonically with their great-circle distance, so the tree's own Euclidean
//! distance orders and bounds great-circle distance exactly — across the antimeridian and at
//! the poles, with no special cases. Candidates found by chord are confirmed with the
//! haversine distance (float64, mean Earth radius), which is also what each hit reports.

use std::collections::HashMap;
use std::sync::Arc;

use rstar::{PointDistance, RTree, RTreeObject, AABB};

/// Mean Earth radius (IUGG), in metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A point as a unit vector.
pub fn to_xyz(lat: f64, lon: f64) -> [f64; 3] {
    let (la, lo) = (lat.to_radians(), lon.to_radians());
    [la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()]
}

/// Great-circle distance in metres (haversine).
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// Squared chord (unit sphere) that encloses every point within `radius_m`, with a margin for
/// rounding; candidates are confirmed with `haversine_m`.
fn chord2_for(radius_m: f64) -> f64 {
    let angle = (radius_m / EARTH_RADIUS_M).min(std::f64::consts::PI);
    let chord = 2.0 * (angle / 2.0).sin();
    (chord + 1e-9).powi(2)
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    xyz: [f64; 3],
    lat: f64,
    lon: f64,
    key: Arc<str>,
}

impl RTreeObject for Entry {
    type Envelope = AABB<[f64; 3]>;

    fn envelope(&self) -> Self::Envelope {
        AABB::from_point(self.xyz)
    }
}

impl PointDistance for Entry {
    fn distance_2(&self, p: &[f64; 3]) -> f64 {
        (self.xyz[0] - p[0]).powi(2) + (self.xyz[1] - p[1]).powi(2) + (self.xyz[2] - p[2]).powi(2)
    }
}

/// A latitude/longitude box; `west > east` means it crosses the antimeridian.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BBox {
    pub south: f64,
    pub west: f64,
    pub north: f64,
    pub east: f64,
}

impl BBox {
    /// The box's centre (longitude taken across the antimeridian when the box crosses it).
    pub fn centre(&self) -> (f64, f64) {
        let lat = (self.south + self.north) / 2.0;
        let span = if self.west <= self.east {
            self.east - self.west
        } else {
            self.east + 360.0 - self.west
        };
        let mut lon = self.west + span / 2.0;
        if lon > 180.0 {
            lon -= 360.0;
        }
        (lat, lon)
    }

    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        let lat_ok = lat >= self.south && lat <= self.north;
        let lon_ok = if self.west <= self.east {
            lon >= self.west && lon <= self.east
        } else {
            lon >= self.west || lon <= self.east
        };
        lat_ok && lon_ok
    }

    /// A 3-D box enclosing every unit vector of this lat/lon box: z = sin(lat) is exact; x and
    /// y take their extremes at the box's edges or where the wedge crosses an axis.
    fn envelope(&self) -> AABB<[f64; 3]> {
        let (s, n) = (self.south.to_radians(), self.north.to_radians());
        let r_at = |lat: f64| lat.cos();
        let r_max = if s <= 0.0 && n >= 0.0 {
            1.0
        } else {
            r_at(s).max(r_at(n))
        };
        let r_min = r_at(s).min(r_at(n));
        let mut lons = vec![self.west, self.east];
        for axis in [-180.0, -90.0, 0.0, 90.0, 180.0] {
            if self.contains_lon(axis) {
                lons.push(axis);
            }
        }
        let (mut lo, mut hi) = ([f64::MAX; 3], [f64::MIN; 3]);
        for lon in lons {
            let l = f64::to_radians(lon);
            for r in [r_min, r_max] {
                let (x, y) = (r * l.cos(), r * l.sin());
                lo[0] = lo[0].min(x);
                hi[0] = hi[0].max(x);
                lo[1] = lo[1].min(y);
                hi[1] = hi[1].max(y);
            }
        }
        let eps = 1e-9;
        AABB::from_corners(
            [lo[0] - eps, lo[1] - eps, s.sin() - eps],
            [hi[0] + eps, hi[1] + eps, n.sin() + eps],
        )
    }

    fn contains_lon(&self, lon: f64) -> bool {
        if self.west <= self.east {
            lon >= self.west && lon <= self.east
        } else {
            lon >= self.west || lon <= self.east
        }
    }
}

/// The points of one partition, by document key.
#[derive(Clone, Default)]
pub struct GeoIndex {
    tree: RTree<Entry>,
    by_key: HashMap<Arc<str>, (f64, f64)>,
}

impl GeoIndex {
    /// Builds from (key, lat, lon) triples; later duplicates of a key win.
    pub fn bulk(points: impl IntoIterator<Item = (String, f64, f64)>) -> GeoIndex {
        let mut by_key: HashMap<Arc<str>, (f64, f64)> = HashMap::new();
        for (k, lat, lon) in points {
            by_key.insert(Arc::from(k), (lat, lon));
        }
        let entries = by_key
            .iter()
            .map(|(k, &(lat, lon))| Entry {
                xyz: to_xyz(lat, lon),
                lat,
                lon,
                key: k.clone(),
            })
            .collect();
        GeoIndex {
            tree: RTree::bulk_load(entries),
            by_key,
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The point of `key`, if it has one.
    pub fn get(&self, key: &str) -> Option<(f64, f64)> {
        self.by_key.get(key).copied()
    }

    /// Sets the point of `key`, or removes it. An unchanged point is left in place (most
    /// updates do not move a row: removing and reinserting it fragments the tree).
    pub fn set(&mut self, key: &str, point: Option<(f64, f64)>) {
        if point.is_some() && self.by_key.get(key).copied() == point {
            return;
        }
        if let Some((k, (lat, lon))) = self.by_key.remove_entry(key) {
            let old = Entry {
                xyz: to_xyz(lat, lon),
                lat,
                lon,
                key: k,
            };
            let removed = self.tree.remove(&old);
            debug_assert!(removed.is_some(), "tree and key map agree");
        }
        if let Some((lat, lon)) = point {
            let key: Arc<str> = Arc::from(key);
            self.by_key.insert(key.clone(), (lat, lon));
            self.tree.insert(Entry {
                xyz: to_xyz(lat, lon),
                lat,
                lon,
                key,
            });
        }
    }

    /// Every point within `radius_m` of (lat, lon), with its distance, in no order.
    pub fn within<'a>(
        &'a self,
        lat: f64,
        lon: f64,
        radius_m: f64,
        mut visit: impl FnMut(&'a str, f64),
    ) {
        for e in self
            .tree
            .locate_within_distance(to_xyz(lat, lon), chord2_for(radius_m))
        {
            let d = haversine_m(lat, lon, e.lat, e.lon);
            if d <= radius_m {
                visit(&e.key, d);
            }
        }
    }

    /// Every point inside the box, with its distance from (lat, lon), in no order.
    pub fn in_bbox<'a>(&'a self, b: &BBox, from: (f64, f64), mut visit: impl FnMut(&'a str, f64)) {
        for e in self.tree.locate_in_envelope(b.envelope()) {
            if b.contains(e.lat, e.lon) {
                visit(&e.key, haversine_m(from.0, from.1, e.lat, e.lon));
            }
        }
    }

    /// Points by increasing distance from (lat, lon).
    pub fn nearest(&self, lat: f64, lon: f64) -> impl Iterator<Item = (&str, f64)> + '_ {
        self.tree
            .nearest_neighbor_iter(to_xyz(lat, lon))
            .map(move |e| (&*e.key, haversine_m(lat, lon, e.lat, e.lon)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn points() -> impl Strategy<Value = Vec<(f64, f64)>> {
        proptest::collection::vec((-90.0..=90.0f64, -180.0..=180.0f64), 0..200)
    }

    fn index(ps: &[(f64, f64)]) -> GeoIndex {
        GeoIndex::bulk(
            ps.iter()
                .enumerate()
                .map(|(i, &(la, lo))| (i.to_string(), la, lo)),
        )
    }

    #[test]
    fn antimeridian_and_poles_are_not_special() {
        let g = index(&[
            (0.0, 179.9),
            (0.0, -179.9),
            (89.99, 0.0),
            (89.99, 180.0),
            (-89.0, 10.0),
        ]);
        let mut hits = Vec::new();
        g.within(0.0, 180.0, 20_000.0, |k, _| hits.push(k.to_owned()));
        hits.sort();
        assert_eq!(hits, ["0", "1"]);
        let mut hits = Vec::new();
        g.within(90.0, 0.0, 5_000.0, |k, _| hits.push(k.to_owned()));
        hits.sort();
        assert_eq!(hits, ["2", "3"]);
        let nearest: Vec<&str> = g.nearest(-90.0, 0.0).map(|(k, _)| k).take(1).collect();
        assert_eq!(nearest, ["4"]);
    }

    #[test]
    fn radius_zero_finds_the_exact_point_only() {
        let g = index(&[(48.85, 2.35), (48.850001, 2.35)]);
        let mut hits = Vec::new();
        g.within(48.85, 2.35, 0.0, |k, d| hits.push((k.to_owned(), d)));
        assert_eq!(hits, [("0".to_owned(), 0.0)]);
    }

    #[test]
    fn set_moves_and_removes() {
        let mut g = index(&[(10.0, 10.0)]);
        g.set("0", Some((-10.0, -10.0)));
        g.set("1", Some((10.0, 10.0)));
        assert_eq!(g.len(), 2);
        let mut hits = Vec::new();
        g.within(10.0, 10.0, 1.0, |k, _| hits.push(k.to_owned()));
        assert_eq!(hits, ["1"]);
        g.set("1", None);
        g.set("1", None);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn bbox_across_the_antimeridian() {
        let g = index(&[(0.0, 179.0), (0.0, -179.0), (0.0, 0.0), (5.0, 179.5)]);
        let b = BBox {
            south: -1.0,
            west: 178.0,
            north: 1.0,
            east: -178.0,
        };
        let mut hits = Vec::new();
        g.in_bbox(&b, (0.0, 180.0), |k, _| hits.push(k.to_owned()));
        hits.sort();
        assert_eq!(hits, ["0", "1"]);
    }

    proptest! {
        #[test]
        fn within_equals_brute_force(ps in points(), lat in -90.0..=90.0f64, lon in -180.0..=180.0f64, r in 0.0..3.0e7f64) {
            let g = index(&ps);
            let mut got = Vec::new();
            g.within(lat, lon, r, |k, _| got.push(k.parse::<usize>().unwrap()));
            got.sort();
            let want: Vec<usize> = ps.iter().enumerate().filter(|(_, p)| haversine_m(lat, lon, p.0, p.1) <= r).map(|(i, _)| i).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn nearest_is_sorted_by_distance_and_complete(ps in points(), lat in -90.0..=90.0f64, lon in -180.0..=180.0f64) {
            let g = index(&ps);
            let got: Vec<f64> = g.nearest(lat, lon).map(|(_, d)| d).collect();
            prop_assert_eq!(got.len(), ps.len());
            for w in got.windows(2) {
                // Chord and haversine agree on order up to rounding (well under a millimetre).
                prop_assert!(w[0] <= w[1] + 1e-3, "{} > {}", w[0], w[1]);
            }
        }

        #[test]
        fn bbox_equals_brute_force(ps in points(), s in -90.0..=90.0f64, h in 0.0..=90.0f64, w in -180.0..=180.0f64, e in -180.0..=180.0f64) {
            let b = BBox { south: s, north: (s + h).min(90.0), west: w, east: e };
            let g = index(&ps);
            let mut got = Vec::new();
            g.in_bbox(&b, (0.0, 0.0), |k, _| got.push(k.parse::<usize>().unwrap()));
            got.sort();
            let want: Vec<usize> = ps.iter().enumerate().filter(|(_, p)| b.contains(p.0, p.1)).map(|(i, _)| i).collect();
            prop_assert_eq!(got, want);
        }
    }
}
