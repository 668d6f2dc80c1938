/* cardvault hosted fields: the field frame controller, and the card rules it shares with the
 * tokenizer.
 *
 * Two parts:
 *   1. Rules: pure functions (brand, Luhn, formatting, expiry, CVC, bank numbers) published as
 *      window.CardVaultRules. tokenizer.html loads this file too, so the tokenizer checks values
 *      with the same code that checked them as they were typed; there is one copy of the rules.
 *   2. The field controller, started only when <body data-field> names a field.
 *
 * Security (see README.md): the value typed here leaves this frame only over the MessagePort the
 * tokenizer hands us. Messages to the merchant page carry state (complete, empty, brand, error
 * text), never digits, and go to the exact origin the frame was opened for. Nothing is logged.
 * Classic script, no modules: the CSP allows 'self' scripts and the page has no build step. */
(function () {
  'use strict';

  // ---------------------------------------------------------------------------------------
  // 1. Rules
  // ---------------------------------------------------------------------------------------

  const MESSAGES = Object.freeze({
    cardIncomplete: 'Your card number is incomplete.',
    cardInvalid: 'Your card number is invalid.',
    expiryIncomplete: "Your card's expiration date is incomplete.",
    expiryInvalid: "Your card's expiration date is invalid.",
    expiryPast: "Your card's expiration date is in the past.",
    expiryYearInvalid: "Your card's expiration year is invalid.",
    cvcIncomplete: "Your card's security code is incomplete.",
    cvcInvalid: "Your card's security code is invalid.",
    accountInvalid: 'Invalid account number',
    routingInvalid: 'Invalid routing number',
  });

  // `lengths`: the digit counts a number of this brand may have (the server accepts any 13-19
  // Luhn-valid number, so these only shape typing and messages). `typical`: from this length on,
  // a Luhn failure is reported while the user types, because most cards of the brand end there.
  const BRANDS = Object.freeze({
    visa: { lengths: [13, 16, 19], typical: 16, cvc: 3 },
    mastercard: { lengths: [16], typical: 16, cvc: 3 },
    amex: { lengths: [15], typical: 15, cvc: 4 },
    discover: { lengths: [16, 17, 18, 19], typical: 16, cvc: 3 },
    diners: { lengths: [14, 15, 16, 17, 18, 19], typical: 14, cvc: 3 },
    jcb: { lengths: [16, 17, 18, 19], typical: 16, cvc: 3 },
    unionpay: { lengths: [16, 17, 18, 19], typical: 16, cvc: 3 },
    unknown: { lengths: [13, 14, 15, 16, 17, 18, 19], typical: 16, cvc: 3 },
  });

  // The year after which an expiry is a typo rather than a card (the server's rule too).
  const MAX_YEARS_AHEAD = 50;
  const ACCOUNT_MIN_DIGITS = 4;
  const ACCOUNT_MAX_DIGITS = 17;
  const ROUTING_DIGITS = 9;

  function digitsOf(text) {
    return String(text == null ? '' : text).replace(/\D+/g, '');
  }

  /** The number formed by the first `n` digits, or 0 when there are fewer (as the server does). */
  function prefix(digits, n) {
    return digits.length >= n ? Number(digits.slice(0, n)) : 0;
  }

  /** The card network, from the leading digits. Mirrors cardvault-core's Brand::detect, except
   * that Maestro is reported as 'unknown' (the browser contract has no 'maestro'); both use a
   * 3-digit CVC, so nothing downstream differs. */
  function detectBrand(digits) {
    const p1 = prefix(digits, 1);
    const p2 = prefix(digits, 2);
    const p3 = prefix(digits, 3);
    const p4 = prefix(digits, 4);
    const p6 = prefix(digits, 6);
    if (p2 === 34 || p2 === 37) return 'amex';
    if (p6 >= 622126 && p6 <= 622925) return 'discover';
    if (p4 === 6011 || (p3 >= 644 && p3 <= 649) || p2 === 65) return 'discover';
    if (p4 >= 3528 && p4 <= 3589) return 'jcb';
    if ((p3 >= 300 && p3 <= 305) || p4 === 3095 || p2 === 36 || p2 === 38 || p2 === 39) {
      return 'diners';
    }
    if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return 'mastercard';
    if (p1 === 4) return 'visa';
    if (p2 === 62 || p2 === 81) return 'unionpay';
    return 'unknown';
  }

  function luhnValid(digits) {
    if (!/^\d+$/.test(digits)) return false;
    let sum = 0;
    for (let i = 0; i < digits.length; i += 1) {
      let d = digits.charCodeAt(digits.length - 1 - i) - 48;
      if (i % 2 === 1) {
        d *= 2;
        if (d > 9) d -= 9;
      }
      sum += d;
    }
    return sum % 10 === 0;
  }

  function maxCardDigits(brand) {
    const lengths = BRANDS[brand].lengths;
    return lengths[lengths.length - 1];
  }

  /** Group sizes as printed on the card: 4-6-5 for Amex, 4-6-4 for a 14-digit Diners card,
   * fours for the rest (a 19-digit number ends in a group of three). */
  function cardGroups(brand, length) {
    if (brand === 'amex') return [4, 6, 5];
    if (brand === 'diners' && length <= 14) return [4, 6, 4];
    return [4, 4, 4, 4, 3];
  }

  function formatCardNumber(digits) {
    const groups = cardGroups(detectBrand(digits), digits.length);
    const parts = [];
    let start = 0;
    for (const size of groups) {
      if (start >= digits.length) break;
      parts.push(digits.slice(start, start + size));
      start += size;
    }
    if (start < digits.length) parts.push(digits.slice(start));
    return parts.join(' ');
  }

  /** Every evaluate* returns { empty, complete, error, live }: `error` is the message for the
   * value as it stands (even when empty, for the tokenizer), `live` says it may be shown while
   * the user is still typing (the value is complete but wrong), otherwise only after blur. */
  function verdict(empty, complete, error, live) {
    return { empty, complete, error: complete ? null : error, live: Boolean(live) };
  }

  function evaluateCardNumber(digits) {
    const brand = detectBrand(digits);
    const spec = BRANDS[brand];
    const lengthOk = spec.lengths.includes(digits.length);
    let result;
    if (digits.length === 0) {
      result = verdict(true, false, MESSAGES.cardIncomplete, false);
    } else if (lengthOk && luhnValid(digits)) {
      result = verdict(false, true, null, false);
    } else if (lengthOk || digits.length >= maxCardDigits(brand)) {
      const live = digits.length >= spec.typical || digits.length >= maxCardDigits(brand);
      result = verdict(false, false, MESSAGES.cardInvalid, live);
    } else {
      result = verdict(false, false, MESSAGES.cardIncomplete, false);
    }
    result.brand = brand;
    return result;
  }

  /** Turns what is in the expiry input into its digits, "MMYY" or a prefix of it.
   *
   * `mode` is 'insert' for typing, paste and autofill, 'delete' for deletions. Deletions keep
   * the digits where they are; insertions are read smartly, so that "1/" means January,
   * "4" means April, and autofill's "12/2030", "12 / 30", "1230" or "122030" all become "1230". */
  function parseExpiry(text, mode) {
    const raw = String(text == null ? '' : text);
    if (mode === 'delete') return digitsOf(raw).slice(0, 4);
    const sep = raw.search(/[/\-.]/);
    if (sep >= 0) {
      const month = digitsOf(raw.slice(0, sep));
      const year = digitsOf(raw.slice(sep + 1));
      if (month.length <= 2) {
        const mm = month.length === 1 && month !== '0' ? '0' + month : month;
        const yy = year.length === 4 ? year.slice(2) : year.slice(0, 2);
        return (mm + yy).slice(0, 4);
      }
    }
    let d = digitsOf(raw);
    if (d.length === 6) d = d.slice(0, 2) + d.slice(4); // MMYYYY
    if (/^[2-9]/.test(d)) d = '0' + d; // no month starts with 2-9
    else if (/^1[3-9]/.test(d)) d = '01' + d.slice(1); // "13" can only be January, '3…
    return d.slice(0, 4);
  }

  /** "MM / YY". After a typed second month digit the separator appears at once (so the user
   * sees where the year goes); after a deletion it does not, or backspace could not remove it. */
  function formatExpiry(digits, mode) {
    if (digits.length < 2) return digits;
    if (digits.length === 2) return mode === 'delete' ? digits : digits + ' / ';
    return digits.slice(0, 2) + ' / ' + digits.slice(2, 4);
  }

  /** The current month as year*12+month. The server counts in UTC, the user in local time; the
   * earlier of the two is used so that the browser never refuses what the server would take. */
  function currentMonthIndex(now) {
    const local = now.getFullYear() * 12 + now.getMonth();
    const utc = now.getUTCFullYear() * 12 + now.getUTCMonth();
    return Math.min(local, utc);
  }

  function evaluateExpiry(digits, now) {
    if (digits.length === 0) return verdict(true, false, MESSAGES.expiryIncomplete, false);
    if (!/^\d+$/.test(digits) || digits.length > 4) {
      return verdict(false, false, MESSAGES.expiryInvalid, true);
    }
    const month = digits.length >= 2 ? Number(digits.slice(0, 2)) : null;
    if (month !== null && (month < 1 || month > 12)) {
      return verdict(false, false, MESSAGES.expiryInvalid, true);
    }
    if (digits.length < 4) return verdict(false, false, MESSAGES.expiryIncomplete, false);
    const year = 2000 + Number(digits.slice(2, 4));
    const when = now || new Date();
    const index = year * 12 + (month - 1);
    if (index < currentMonthIndex(when)) return verdict(false, false, MESSAGES.expiryPast, true);
    if (year > when.getFullYear() + MAX_YEARS_AHEAD) {
      return verdict(false, false, MESSAGES.expiryYearInvalid, true);
    }
    return verdict(false, true, null, false);
  }

  /** Expiry digits "MMYY" as the tokenizer sends them: month "MM", four-digit year. */
  function expiryParts(digits) {
    return { month: digits.slice(0, 2), year: '20' + digits.slice(2, 4) };
  }

  /** Allowed CVC lengths. Before the card number is known, the field takes 3 or 4 digits;
   * `strict` (the tokenizer, which knows the number) uses the server's rule: 4 for Amex, else 3. */
  function cvcLengths(brand, strict) {
    if (brand === 'amex') return [4];
    if (brand === 'unknown' && !strict) return [3, 4];
    return [3];
  }

  function evaluateCvc(digits, brand, strict) {
    const lengths = cvcLengths(brand, strict);
    const max = lengths[lengths.length - 1];
    if (digits.length === 0) return verdict(true, false, MESSAGES.cvcIncomplete, false);
    if (!/^\d+$/.test(digits) || digits.length > max) {
      return verdict(false, false, MESSAGES.cvcInvalid, true);
    }
    if (lengths.includes(digits.length)) return verdict(false, true, null, false);
    return verdict(false, false, MESSAGES.cvcIncomplete, false);
  }

  function evaluateAccountNumber(digits) {
    if (digits.length === 0) return verdict(true, false, MESSAGES.accountInvalid, false);
    const ok = /^\d+$/.test(digits) && digits.length >= ACCOUNT_MIN_DIGITS
      && digits.length <= ACCOUNT_MAX_DIGITS;
    return verdict(false, ok, MESSAGES.accountInvalid, digits.length > ACCOUNT_MAX_DIGITS);
  }

  /** ABA checksum: weights 3, 7, 1 repeating must sum to a multiple of 10. */
  function routingChecksumValid(digits) {
    if (!/^\d{9}$/.test(digits)) return false;
    const weights = [3, 7, 1];
    let sum = 0;
    for (let i = 0; i < 9; i += 1) sum += weights[i % 3] * (digits.charCodeAt(i) - 48);
    return sum % 10 === 0;
  }

  function evaluateRoutingNumber(digits) {
    if (digits.length === 0) return verdict(true, false, MESSAGES.routingInvalid, false);
    if (digits.length < ROUTING_DIGITS) {
      return verdict(false, false, MESSAGES.routingInvalid, false);
    }
    return verdict(false, routingChecksumValid(digits), MESSAGES.routingInvalid, true);
  }

  const Rules = Object.freeze({
    MESSAGES,
    BRANDS,
    ACCOUNT_MAX_DIGITS,
    ROUTING_DIGITS,
    digitsOf,
    detectBrand,
    luhnValid,
    maxCardDigits,
    formatCardNumber,
    evaluateCardNumber,
    parseExpiry,
    formatExpiry,
    evaluateExpiry,
    expiryParts,
    cvcLengths,
    evaluateCvc,
    evaluateAccountNumber,
    routingChecksumValid,
    evaluateRoutingNumber,
  });
  window.CardVaultRules = Rules;

  // ---------------------------------------------------------------------------------------
  // 2. Field controller
  // ---------------------------------------------------------------------------------------

  /** Per field: how typed text becomes canonical digits, how those are shown, judged and handed
   * to the tokenizer. `ctx` carries the card brand the CVC field learned from the tokenizer. */
  const FIELDS = {
    cardNumber: {
      maxDigits: (digits) => maxCardDigits(detectBrand(digits)),
      normalize(text) {
        const digits = digitsOf(text);
        return digits.slice(0, maxCardDigits(detectBrand(digits)));
      },
      format: (digits) => formatCardNumber(digits),
      evaluate: (digits) => evaluateCardNumber(digits),
      portValue: (digits) => digits,
    },
    expirationDate: {
      maxDigits: () => 4,
      normalize: (text, mode) => parseExpiry(text, mode),
      format: (digits, mode) => formatExpiry(digits, mode),
      evaluate: (digits) => evaluateExpiry(digits, new Date()),
      portValue: (digits) => (digits.length === 4 ? digits.slice(0, 2) + '/' + digits.slice(2) : digits),
    },
    cvv: {
      // Typing stops at the brand's length; a paste keeps up to 4 digits, so a 4-digit code
      // pasted for a Visa shows as wrong instead of being silently cut.
      maxDigits: (digits, ctx) => Math.max(...cvcLengths(ctx.brand, false)),
      normalize: (text) => digitsOf(text).slice(0, 4),
      format: (digits) => digits,
      evaluate: (digits, ctx) => evaluateCvc(digits, ctx.brand, false),
      portValue: (digits) => digits,
    },
    accountNumber: {
      maxDigits: () => ACCOUNT_MAX_DIGITS,
      normalize: (text) => digitsOf(text).slice(0, ACCOUNT_MAX_DIGITS),
      format: (digits) => digits,
      evaluate: (digits) => evaluateAccountNumber(digits),
      portValue: (digits) => digits,
    },
    routingNumber: {
      maxDigits: () => ROUTING_DIGITS,
      normalize: (text) => digitsOf(text).slice(0, ROUTING_DIGITS),
      format: (digits) => digits,
      evaluate: (digits) => evaluateRoutingNumber(digits),
      portValue: (digits) => digits,
    },
  };

  // Style keys that would move the input out of the frame's layout; the frame owns its box.
  const BLOCKED_STYLE_KEYS = new Set([
    'position', 'display', 'width', 'minWidth', 'maxWidth', 'top', 'right', 'bottom', 'left',
    'inset', 'float', 'cssFloat', 'zIndex', 'transform', 'translate', 'contain',
  ]);
  const STYLE_STATES = ['base', 'focus', 'invalid', 'complete', 'placeholder'];
  const PLACEHOLDER_PROPERTIES = {
    color: '--placeholder-color',
    fontWeight: '--placeholder-font-weight',
    fontStyle: '--placeholder-font-style',
  };
  const MAX_STYLE_VALUE_CHARS = 200;
  const MAX_PLACEHOLDER_CHARS = 100;
  const VAULT_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

  const FIELD = document.body ? document.body.dataset.field : undefined;
  if (Object.prototype.hasOwnProperty.call(FIELDS, FIELD)) startField(FIELD, FIELDS[FIELD]);

  /** The merchant origin from the query, only if it is an origin and nothing else. */
  function originParam(params) {
    const value = params.get('origin') || '';
    try {
      return new URL(value).origin === value ? value : null;
    } catch (_) {
      return null;
    }
  }

  function startField(field, spec) {
    const params = new URLSearchParams(location.search);
    const origin = originParam(params);
    const vault = params.get('vault') || '';
    const input = document.getElementById('field');
    const errorEl = document.getElementById('field-error');
    // Without a valid origin there is nobody we may talk to; the input still works, inertly.
    const framed = window.parent !== window && origin !== null && VAULT_ID_PATTERN.test(vault);

    const state = {
      digits: '',
      focused: false,
      ctx: { brand: 'unknown' },
      result: spec.evaluate('', { brand: 'unknown' }),
      shownError: null,
      port: null,
      lastChange: null,
      style: {},
      appliedStyleKeys: [],
      height: 0,
    };

    function postToParent(message) {
      if (!framed) return;
      message.vault = vault;
      message.field = field;
      window.parent.postMessage(message, origin);
    }

    // ---- typing ----

    function countDigits(text) {
      return digitsOf(text).length;
    }

    /** The index in `text` just after its `n`-th digit. */
    function indexAfterDigits(text, n) {
      if (n <= 0) return 0;
      let seen = 0;
      for (let i = 0; i < text.length; i += 1) {
        if (/\d/.test(text[i])) {
          seen += 1;
          if (seen === n) return i + 1;
        }
      }
      return text.length;
    }

    /** Reformats the input from `text`, keeping the caret next to the same digit. */
    function applyText(text, caret, mode) {
      const atEnd = caret >= text.length;
      const digitsBefore = countDigits(text.slice(0, caret));
      const digits = spec.normalize(text, mode, state.ctx);
      const display = spec.format(digits, mode, state.ctx);
      if (input.value !== display) input.value = display;
      // Setting a selection on an unfocused input can pull focus in some browsers (autofill
      // fills fields the user is not in).
      if (document.activeElement === input) {
        const pos = atEnd ? display.length : indexAfterDigits(display, Math.min(digitsBefore, digits.length));
        input.setSelectionRange(pos, pos);
      }
      state.digits = digits;
      refresh();
    }

    function onInput(event) {
      const mode = String(event.inputType || '').startsWith('delete') ? 'delete' : 'insert';
      const caret = input.selectionStart == null ? input.value.length : input.selectionStart;
      applyText(input.value, caret, mode);
    }

    /** Backspace or Delete next to a separator removes the digit beyond it: the separators are
     * drawn by us, so deleting one alone would be undone by the next reformat. Separators at
     * the very end (the " / " after a month) are left to the default, which drops them. */
    function deleteAcrossSeparator(event) {
      const value = input.value;
      const start = input.selectionStart;
      if (start == null || start !== input.selectionEnd) return false;
      const backward = event.inputType === 'deleteContentBackward';
      const forward = event.inputType === 'deleteContentForward';
      if (backward && start > 0 && /\D/.test(value[start - 1]) && /\d/.test(value.slice(start))) {
        let i = start - 1;
        while (i >= 0 && /\D/.test(value[i])) i -= 1;
        if (i < 0) return false;
        event.preventDefault();
        applyText(value.slice(0, i) + value.slice(i + 1), i, 'delete');
        return true;
      }
      if (forward && start < value.length && /\D/.test(value[start])) {
        let i = start;
        while (i < value.length && /\D/.test(value[i])) i += 1;
        if (i >= value.length) return false;
        event.preventDefault();
        applyText(value.slice(0, i) + value.slice(i + 1), start, 'delete');
        return true;
      }
      return false;
    }

    /** A typed digit that would overflow the field is refused, rather than pushing the last
     * digit out. */
    function refuseOverflow(event) {
      if (event.inputType !== 'insertText' || !event.data) return;
      const incoming = countDigits(event.data);
      if (incoming === 0) return;
      const value = input.value;
      const selected = countDigits(value.slice(input.selectionStart || 0, input.selectionEnd || 0));
      const after = state.digits.length - selected + incoming;
      if (after > spec.maxDigits(state.digits, state.ctx)) event.preventDefault();
    }

    function onBeforeInput(event) {
      if (deleteAcrossSeparator(event)) return;
      refuseOverflow(event);
    }

    // ---- state, errors and what the merchant page is told ----

    function refresh() {
      const result = spec.evaluate(state.digits, state.ctx);
      state.result = result;
      // Like Stripe: an error shows once the user leaves the field, or at once when the value
      // is complete but wrong; never for an empty field.
      const show = result.error && !result.empty && (result.live || !state.focused);
      const shownError = show ? result.error : null;
      if (shownError !== state.shownError) {
        state.shownError = shownError;
        // Rewriting the same text would make screen readers announce it again.
        errorEl.textContent = shownError || '';
        input.setAttribute('aria-invalid', shownError ? 'true' : 'false');
      }
      applyStyles();
      if (field === 'cardNumber') sendBrandToTokenizer();
      postChange();
    }

    function postChange() {
      const change = {
        type: 'cardvault:change',
        complete: state.result.complete,
        empty: state.result.empty,
        error: state.shownError,
      };
      if (field === 'cardNumber') change.brand = state.result.brand;
      const key = JSON.stringify(change);
      if (key === state.lastChange) return;
      state.lastChange = key;
      postToParent(change);
    }

    function sendBrandToTokenizer() {
      if (state.port) state.port.postMessage({ type: 'brand', brand: state.result.brand });
    }

    // ---- styles from the merchant ----

    function cleanStyleState(value) {
      const out = {};
      if (!value || typeof value !== 'object') return out;
      for (const key of Object.keys(value)) {
        const v = value[key];
        if (!/^[a-zA-Z]+$/.test(key) || BLOCKED_STYLE_KEYS.has(key)) continue;
        if (!(key in input.style)) continue;
        if (typeof v !== 'string' && typeof v !== 'number') continue;
        const text = String(v);
        // url() would fetch from wherever the merchant says; the CSP blocks it anyway, but we
        // do not even try.
        if (text.length > MAX_STYLE_VALUE_CHARS || /url\s*\(|expression\s*\(/i.test(text)) continue;
        out[key] = text;
      }
      return out;
    }

    function setStyle(style) {
      const clean = {};
      for (const stateName of STYLE_STATES) {
        clean[stateName] = cleanStyleState(style && style[stateName]);
      }
      state.style = clean;
      applyPlaceholderStyle(clean.placeholder);
      applyStyles();
    }

    function applyPlaceholderStyle(placeholder) {
      for (const key of Object.keys(PLACEHOLDER_PROPERTIES)) {
        if (placeholder[key] !== undefined) {
          input.style.setProperty(PLACEHOLDER_PROPERTIES[key], placeholder[key]);
        } else {
          input.style.removeProperty(PLACEHOLDER_PROPERTIES[key]);
        }
      }
    }

    /** base, then focus while focused, complete once left complete, invalid while an error
     * shows: later layers win, so red beats the focus colour. */
    function applyStyles() {
      const s = state.style;
      if (!s.base) return;
      const merged = Object.assign({}, s.base);
      if (state.focused) Object.assign(merged, s.focus);
      if (state.result.complete && !state.focused) Object.assign(merged, s.complete);
      if (state.shownError) Object.assign(merged, s.invalid);
      for (const key of state.appliedStyleKeys) {
        if (!(key in merged)) input.style[key] = '';
      }
      for (const key of Object.keys(merged)) input.style[key] = merged[key];
      state.appliedStyleKeys = Object.keys(merged);
    }

    function loadFonts(fonts) {
      if (!Array.isArray(fonts) || typeof FontFace !== 'function') return;
      for (const font of fonts) {
        if (!font || typeof font.family !== 'string' || typeof font.src !== 'string') continue;
        const descriptors = {};
        for (const key of ['weight', 'style', 'display', 'unicodeRange']) {
          if (typeof font[key] === 'string') descriptors[key] = font[key];
        }
        try {
          const face = new FontFace(font.family, font.src, descriptors);
          document.fonts.add(face);
          // A font the CSP refuses (anything but this origin or data:) just does not apply.
          face.load().catch(() => {});
        } catch (_) {
          // An unparsable source is the merchant's mistake; the field keeps its font.
        }
      }
    }

    function applyOptions(options) {
      if (!options || typeof options !== 'object') return;
      if (typeof options.placeholder === 'string') {
        input.placeholder = options.placeholder.slice(0, MAX_PLACEHOLDER_CHARS);
      }
      if (typeof options.disabled === 'boolean') input.disabled = options.disabled;
      if (options.style && typeof options.style === 'object') setStyle(options.style);
      if (options.fonts) loadFonts(options.fonts);
    }

    // ---- messages ----

    function clearValue() {
      input.value = '';
      state.digits = '';
      refresh();
    }

    function onParentMessage(event, message) {
      if (event.source !== window.parent || event.origin !== origin) return;
      if (message.vault !== undefined && message.vault !== vault) return;
      if (message.type === 'cardvault:update') applyOptions(message.options);
      else if (message.type === 'cardvault:focus') input.focus();
      else if (message.type === 'cardvault:clear') clearValue();
    }

    /** The tokenizer's frame in the same merchant page, found by the name the SDK gave it. */
    function tokenizerWindow() {
      try {
        return window.parent.frames['cardvault-' + vault + '-tokenizer'] || null;
      } catch (_) {
        return null;
      }
    }

    function onPortOffer(event, message) {
      if (event.origin !== location.origin || message.vault !== vault) return;
      if (!event.ports || !event.ports[0] || event.source !== tokenizerWindow()) return;
      if (state.port) state.port.close();
      state.port = event.ports[0];
      state.port.onmessage = onPortMessage;
      if (field === 'cardNumber') sendBrandToTokenizer();
    }

    function onPortMessage(event) {
      const message = event.data;
      if (!message || typeof message !== 'object') return;
      if (message.type === 'collect') {
        state.port.postMessage({
          type: 'value',
          requestId: message.requestId,
          field,
          value: spec.portValue(state.digits),
          complete: state.result.complete,
        });
      } else if (message.type === 'brand' && field === 'cvv') {
        const brand = Object.prototype.hasOwnProperty.call(BRANDS, message.brand) ? message.brand : 'unknown';
        if (brand !== state.ctx.brand) {
          state.ctx.brand = brand;
          refresh();
        }
      } else if (message.type === 'clear') {
        clearValue();
      }
    }

    function onMessage(event) {
      const message = event.data;
      if (!framed || !message || typeof message !== 'object') return;
      if (message.type === 'cardvault:port') onPortOffer(event, message);
      else onParentMessage(event, message);
    }

    // ---- wiring ----

    function reportHeight() {
      const height = Math.ceil(document.body.getBoundingClientRect().height);
      if (height > 0 && height !== state.height) {
        state.height = height;
        postToParent({ type: 'cardvault:resize', height });
      }
    }

    input.addEventListener('beforeinput', onBeforeInput);
    input.addEventListener('input', onInput);
    input.addEventListener('focus', () => {
      state.focused = true;
      refresh();
      postToParent({ type: 'cardvault:focus' });
    });
    input.addEventListener('blur', () => {
      state.focused = false;
      refresh();
      postToParent({ type: 'cardvault:blur' });
    });
    window.addEventListener('message', onMessage);
    if (typeof ResizeObserver === 'function') new ResizeObserver(reportHeight).observe(document.body);

    // A value the browser restored (back/forward cache, autofill before load) is read in.
    if (input.value) applyText(input.value, input.value.length, 'insert');
    else refresh();
    postToParent({ type: 'cardvault:ready' });
    reportHeight();
  }
})();
