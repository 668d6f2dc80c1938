use proptest::prelude::*;

use super::*;

const TODAY: YearMonth = YearMonth {
    year: 2026,
    month: 11,
};

/// Appends the Luhn check digit that makes `body` valid.
fn with_check_digit(body: &str) -> String {
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|candidate| luhn_valid(candidate))
        .unwrap_or_default()
}

#[test]
fn accepts_test_cards_of_every_brand() {
    let cases = [
        ("4242424242424242", Brand::Visa),
        ("4000 0566 5566 5556", Brand::Visa),
        ("5555-5555-5555-4444", Brand::Mastercard),
        ("2223003122003222", Brand::Mastercard),
        ("378282246310005", Brand::Amex),
        ("371449635398431", Brand::Amex),
        ("6011111111111117", Brand::Discover),
        ("6221260000000000", Brand::Discover),
        ("3056930009020004", Brand::Diners),
        ("36227206271667", Brand::Diners),
        ("3566002020360505", Brand::Jcb),
        ("6200000000000005", Brand::UnionPay),
        ("6759649826438453", Brand::Maestro),
        ("4222222222222", Brand::Visa),
    ];
    for (number, brand) in cases {
        let pan = Pan::parse(number).unwrap_or_else(|_| panic!("{number} should be valid"));
        assert_eq!(pan.brand(), brand, "{number}");
    }
}

#[test]
fn refuses_bad_numbers() {
    for bad in [
        "",
        "4242424242424241",
        "424242424242",
        "42424242424242424242",
        "4242a24242424242",
        "4242.4242.4242.4242",
        "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢",
    ] {
        assert_eq!(
            Pan::parse(bad).err(),
            Some(ValidationError::InvalidCardNumber),
            "{bad:?}"
        );
    }
}

#[test]
fn pan_parts_and_mask() {
    let pan = Pan::parse("4242 4242 4242 4242").unwrap();
    assert_eq!(pan.expose_secret(), "4242424242424242");
    assert_eq!(pan.bin(), "424242");
    assert_eq!(pan.last4(), "4242");
    assert_eq!(pan.masked(), "424242******4242");
    assert_eq!(format!("{pan:?}"), "Pan(424242******4242)");
}

#[test]
fn expiry_rules() {
    let e = Expiry::parse("1", "2030", TODAY).unwrap();
    assert_eq!(
        (e.month(), e.year(), e.year2(), e.year4().as_str()),
        ("01", "2030", "30", "2030")
    );
    let e = Expiry::parse("12", "30", TODAY).unwrap();
    assert_eq!(
        (e.month(), e.year(), e.year2(), e.year4().as_str()),
        ("12", "30", "30", "2030")
    );
    // The current month is still valid; the one before is not.
    assert!(Expiry::parse("11", "2026", TODAY).is_ok());
    assert_eq!(
        Expiry::parse("10", "2026", TODAY),
        Err(ValidationError::CardExpired)
    );
    assert_eq!(
        Expiry::parse("12", "25", TODAY),
        Err(ValidationError::CardExpired)
    );
    for month in ["0", "00", "13", "1a", "", "123", "-1"] {
        assert_eq!(
            Expiry::parse(month, "2030", TODAY),
            Err(ValidationError::InvalidField("expirationMonth")),
            "{month:?}"
        );
    }
    for year in ["203", "20300", "", "2o30", "2099"] {
        assert_eq!(
            Expiry::parse("12", year, TODAY),
            Err(ValidationError::InvalidField("expirationYear")),
            "{year:?}"
        );
    }
}

#[test]
fn cvc_length_follows_brand() {
    assert!(Cvc::parse("123", Brand::Visa, "cvv").is_ok());
    assert!(Cvc::parse("1234", Brand::Amex, "cvv").is_ok());
    assert_eq!(
        Cvc::parse("1234", Brand::Visa, "cvv").err(),
        Some(ValidationError::InvalidField("cvv"))
    );
    assert_eq!(
        Cvc::parse("123", Brand::Amex, "cvc").err(),
        Some(ValidationError::InvalidField("cvc"))
    );
    assert!(Cvc::parse("12a", Brand::Visa, "cvv").is_err());
    assert_eq!(
        format!("{:?}", Cvc::parse("123", Brand::Visa, "cvv").unwrap()),
        "Cvc(***)"
    );
}

proptest! {
    #[test]
    fn every_number_with_its_check_digit_parses(body in "[1-9][0-9]{11,17}") {
        let number = with_check_digit(&body);
        let pan = Pan::parse(&number).unwrap();
        prop_assert_eq!(pan.expose_secret(), number.as_str());
    }

    #[test]
    fn changing_one_digit_breaks_luhn(body in "[0-9]{12,18}", pos in 0usize..19, delta in 1u8..10) {
        let number = with_check_digit(&body);
        let pos = pos % number.len();
        let mut bytes = number.into_bytes();
        bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert!(!luhn_valid(&changed));
    }

    #[test]
    fn separators_do_not_matter(body in "[1-9][0-9]{14}") {
        let number = with_check_digit(&body);
        let spaced: String = number
            .chars()
            .enumerate()
            .flat_map(|(i, c)| if i > 0 && i % 4 == 0 { vec![' ', c] } else { vec![c] })
            .collect();
        let pan = Pan::parse(&spaced).unwrap();
        prop_assert_eq!(pan.expose_secret(), number.as_str());
    }

    #[test]
    fn parse_never_panics(input in "\\PC{0,40}") {
        let _ = Pan::parse(&input);
        let _ = Expiry::parse(&input, &input, TODAY);
    }
}
