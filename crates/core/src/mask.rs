//! How secret values look when shown: the forms PCI DSS allows to be displayed.

/// `424242******4242`: the first six and last four digits, the rest starred.
/// Numbers too short to keep anything hidden are starred whole.
pub fn card_number(digits: &str) -> String {
    if digits.len() < 11 {
        return "*".repeat(digits.len());
    }
    let (head, rest) = digits.split_at(6);
    let (hidden, tail) = rest.split_at(rest.len() - 4);
    // Built by hand, not `format!`ted: every proxy answer masks the card it carried.
    let mut masked = String::with_capacity(digits.len());
    masked.push_str(head);
    masked.extend(std::iter::repeat_n('*', hidden.len()));
    masked.push_str(tail);
    masked
}

/// `********6789`: only the last four digits shown.
pub fn account_number(digits: &str) -> String {
    if digits.len() <= 4 {
        return "*".repeat(digits.len());
    }
    let tail = &digits[digits.len() - 4..];
    format!("{}{tail}", "*".repeat(digits.len() - 4))
}

/// A CVC is never shown, not even its length.
pub const CVC: &str = "***";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_only_what_pci_allows() {
        assert_eq!(card_number("4242424242424242"), "424242******4242");
        assert_eq!(card_number("378282246310005"), "378282*****0005");
        assert_eq!(card_number("1234"), "****");
        assert_eq!(account_number("000123456789"), "********6789");
        assert_eq!(account_number("1234"), "****");
    }
}
