//! Compact number formatting shared by the CLI tables and the app.

/// 1234567 -> "1.23M", 45100 -> "45.1k", 5300 -> "5300".
pub fn human(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2}G", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.2}M", f / 1e6)
    } else if f >= 1e4 {
        format!("{:.1}k", f / 1e3)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn scales() {
        assert_eq!(super::human(5300), "5300");
        assert_eq!(super::human(45_100), "45.1k");
        assert_eq!(super::human(1_280_128), "1.28M");
        assert_eq!(super::human(3_000_000_000), "3.00G");
    }
}
