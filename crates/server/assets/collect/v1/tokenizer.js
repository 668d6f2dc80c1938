/* cardvault hosted fields: the hidden tokenizer frame.
 *
 * It is the only code that sees all the values together. It opens one MessageChannel per field
 * frame and hands the field its end directly (window.parent.frames[name]), so the values never
 * pass through the merchant's page; on request it collects them, checks them with the rules in
 * element.js (loaded first, as window.CardVaultRules), posts them to the vault's own /tokenize
 * and tells the page only the token and safe-to-show facts (brand, last four, expiry).
 *
 * Commands are taken only from window.parent at the exact origin the frame was opened for, and
 * everything sent back goes to that origin only. Nothing here is logged. */
(function () {
  'use strict';

  const Rules = window.CardVaultRules;
  // How long a field frame has to answer `collect`; they answer at once unless gone.
  const COLLECT_TIMEOUT_MS = 1500;
  // As the SDK's own limit: past it the SDK has reported a timeout, so a later answer is moot.
  const TOKENIZE_TIMEOUT_MS = 30000;
  const EXPIRED_SESSION_MESSAGE = 'Client session expired or not found';
  const MAX_NAME_CHARS = 128;
  const VAULT_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
  const REQUEST_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

  const FIELDS = ['cardNumber', 'expirationDate', 'cvv', 'accountNumber', 'routingNumber'];
  const KINDS = {
    card: { required: ['cardNumber', 'expirationDate'], optional: ['cvv'] },
    bank: { required: ['accountNumber', 'routingNumber'], optional: [] },
  };

  const USER_MESSAGES = {
    generic: 'Your payment details could not be processed. Please try again.',
    network: 'A network error occurred. Check your connection and try again.',
    timeout: 'The request timed out. Please try again.',
    server: 'The payment service is temporarily unavailable. Please try again.',
    rateLimited: 'Too many attempts. Please wait a moment and try again.',
    auth: 'Your payment session has expired. Please refresh the page and try again.',
    config: 'This payment form is not set up for this website.',
    fieldGone: 'A payment field is no longer available. Please refresh the page and try again.',
    name: 'Please check the name and try again.',
    notMounted: 'The payment fields are not ready yet. Please try again.',
  };

  const params = new URLSearchParams(location.search);
  const PK = params.get('pk') || '';
  const ORIGIN = originParam(params.get('origin'));
  const VAULT = params.get('vault') || '';

  const ports = new Map(); // field -> MessagePort
  const awaiting = new Map(); // requestId + field -> resolve(value message)
  let cardBrand = 'unknown';

  function originParam(value) {
    try {
      return value && new URL(value).origin === value ? value : null;
    } catch (_) {
      return null;
    }
  }

  function postToParent(message) {
    message.vault = VAULT;
    window.parent.postMessage(message, ORIGIN);
  }

  // ---- field ports ----

  /** The frame name the SDK gives each field; only those frames get a port. */
  function frameNameOf(field) {
    return 'cardvault-' + VAULT + '-' + field;
  }

  function attach(field, frameName) {
    if (!FIELDS.includes(field) || frameName !== frameNameOf(field)) return;
    let target = null;
    try {
      target = window.parent.frames[frameName] || null;
    } catch (_) {
      target = null;
    }
    // Without the frame there is nothing to attach; the SDK's load timeout reports it.
    if (!target) return;
    const old = ports.get(field);
    if (old) old.close();
    const channel = new MessageChannel();
    channel.port1.onmessage = (event) => onFieldMessage(field, event.data);
    ports.set(field, channel.port1);
    // targetOrigin is our own origin: if that frame has been navigated elsewhere, the port is
    // not delivered.
    target.postMessage({ type: 'cardvault:port', vault: VAULT }, location.origin, [channel.port2]);
    if (field === 'cvv') channel.port1.postMessage({ type: 'brand', brand: cardBrand });
    postToParent({ type: 'cardvault:attached', field });
  }

  function onFieldMessage(field, message) {
    if (!message || typeof message !== 'object') return;
    if (message.type === 'brand' && field === 'cardNumber') {
      cardBrand = Object.prototype.hasOwnProperty.call(Rules.BRANDS, message.brand)
        ? message.brand
        : 'unknown';
      const cvv = ports.get('cvv');
      if (cvv) cvv.postMessage({ type: 'brand', brand: cardBrand });
    } else if (message.type === 'value' && message.field === field) {
      const resolve = awaiting.get(message.requestId + ':' + field);
      if (resolve) resolve(message);
    }
  }

  /** Asks one field for its value; resolves with the value string, or null if it does not
   * answer in time (its frame was removed). */
  function collectOne(field, requestId) {
    const port = ports.get(field);
    if (!port) return Promise.resolve(null);
    const key = requestId + ':' + field;
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(null), COLLECT_TIMEOUT_MS);
      function finish(value) {
        clearTimeout(timer);
        awaiting.delete(key);
        resolve(value);
      }
      awaiting.set(key, (message) => finish(typeof message.value === 'string' ? message.value : ''));
      port.postMessage({ type: 'collect', requestId });
    });
  }

  /** The values of `fields`, or null if a required one is missing. */
  async function collect(kind, fields, requestId) {
    const wanted = kind.required.concat(kind.optional.filter((f) => fields.includes(f)));
    const values = await Promise.all(wanted.map((f) => collectOne(f, requestId)));
    const out = {};
    for (let i = 0; i < wanted.length; i += 1) {
      if (values[i] === null && kind.required.includes(wanted[i])) return null;
      if (values[i] !== null) out[wanted[i]] = values[i];
    }
    return out;
  }

  // ---- checking and building the request ----

  function failure(errorCode, message, raw, status) {
    return { ok: false, error: { errorCode, message, raw: raw || message, status: status || 0 } };
  }

  function checkCard(values, now) {
    const number = Rules.digitsOf(values.cardNumber);
    const card = Rules.evaluateCardNumber(number);
    if (!card.complete) return { error: card.error };
    const expiry = Rules.digitsOf(values.expirationDate);
    const exp = Rules.evaluateExpiry(expiry, now);
    if (!exp.complete) return { error: exp.error };
    const { month, year } = Rules.expiryParts(expiry);
    const data = { cardNumber: number, expirationMonth: month, expirationYear: year };
    // The server takes a card without a CVC, but a page that mounted the CVC field wants one:
    // an empty field is an incomplete code, not a card without a code.
    if (values.cvv !== undefined) {
      const cvv = Rules.digitsOf(values.cvv);
      const cvc = Rules.evaluateCvc(cvv, card.brand, true);
      if (!cvc.complete) return { error: cvc.error };
      data.cvv = cvv;
    }
    return { data };
  }

  function checkBank(values) {
    const account = Rules.digitsOf(values.accountNumber);
    const a = Rules.evaluateAccountNumber(account);
    if (!a.complete) return { error: a.error };
    const routing = Rules.digitsOf(values.routingNumber);
    const r = Rules.evaluateRoutingNumber(routing);
    if (!r.complete) return { error: r.error };
    return { data: { accountNumber: account, routingNumber: routing } };
  }

  /** Holder names: trimmed strings, left out when empty; the server refuses the rest. */
  function addNames(data, billing) {
    if (!billing || typeof billing !== 'object') return;
    for (const key of ['firstName', 'lastName']) {
      const value = billing[key];
      if (typeof value === 'string' && value.trim() !== '') {
        data[key] = value.trim().slice(0, MAX_NAME_CHARS);
      }
    }
  }

  // ---- the server ----

  async function post(body, command) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TOKENIZE_TIMEOUT_MS);
    try {
      const response = await fetch(location.origin + '/tokenize', {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'X-Pub-Key': PK,
          'X-Wax-Key': command.waxKey,
          'X-Tokenization-Session-Id': command.tokenizationSessionId,
          'X-Collect-Origin': ORIGIN,
        },
        body,
        credentials: 'omit',
        cache: 'no-store',
        redirect: 'error',
        referrerPolicy: 'no-referrer',
        signal: controller.signal,
      });
      let json = null;
      try {
        json = await response.json();
      } catch (_) {
        json = null;
      }
      return { status: response.status, json };
    } catch (err) {
      if (controller.signal.aborted) return { failure: failure('timeout', USER_MESSAGES.timeout, 'timeout') };
      return { failure: failure('network', USER_MESSAGES.network, 'network error') };
    } finally {
      clearTimeout(timer);
    }
  }

  /** The user-facing message for a vault validation message (which names a field, never a
   * value). */
  function validationMessage(raw) {
    const M = Rules.MESSAGES;
    if (raw === 'Invalid card number' || /cardNumber$/.test(raw)) {
      return /^Missing/.test(raw) ? M.cardIncomplete : M.cardInvalid;
    }
    if (raw === 'Card has expired') return M.expiryPast;
    if (/(cvv|cvc)$/.test(raw)) return /^Missing/.test(raw) ? M.cvcIncomplete : M.cvcInvalid;
    if (/expiration(Month|Year)$/.test(raw)) {
      return /^Missing/.test(raw) ? M.expiryIncomplete : M.expiryInvalid;
    }
    if (/accountNumber$/.test(raw)) return M.accountInvalid;
    if (/routingNumber$/.test(raw)) return M.routingInvalid;
    if (/(firstName|lastName)$/.test(raw)) return USER_MESSAGES.name;
    return USER_MESSAGES.generic;
  }

  function errorFromResponse(status, json) {
    const raw = json && typeof json.message === 'string' ? json.message : 'HTTP ' + status;
    if (status === 404 && raw === EXPIRED_SESSION_MESSAGE) {
      return failure('auth', USER_MESSAGES.auth, raw, status);
    }
    if (status === 400 || status === 413 || status === 422) {
      return failure('validation', validationMessage(raw), raw, status);
    }
    if (status === 401) return failure('auth', USER_MESSAGES.auth, raw, status);
    // In the browser path the vault answers 403 only for a page origin it does not allow.
    if (status === 403) return failure('config', USER_MESSAGES.config, raw, status);
    if (status === 408) return failure('timeout', USER_MESSAGES.timeout, raw, status);
    if (status === 429) return failure('server', USER_MESSAGES.rateLimited, raw, status);
    if (status >= 500) return failure('server', USER_MESSAGES.server, raw, status);
    return failure('unknown', USER_MESSAGES.generic, raw, status);
  }

  /** Only the token and what is safe to show leave this frame. */
  function successFrom(kind, json) {
    const data = json.data && typeof json.data === 'object' ? json.data : {};
    if (kind === 'bank') {
      return { ok: true, token: json.token, bank: { last4: data.last4, routingNumber: data.routing_number } };
    }
    return {
      ok: true,
      token: json.token,
      cvcSession: typeof json.cvc_session_id === 'string' ? json.cvc_session_id : null,
      card: {
        brand: data.brand,
        last4: data.last4,
        expMonth: data.expiration_month,
        expYear: data.expiration_year,
      },
    };
  }

  // ---- the tokenize command ----

  function isHeaderText(value) {
    // fetch() refuses header values outside Latin-1; a key is plain ASCII anyway.
    return typeof value === 'string' && /^[\x21-\x7e]{1,512}$/.test(value);
  }

  async function tokenize(command) {
    const kind = KINDS[command.kind];
    if (!kind) return failure('config', USER_MESSAGES.generic, 'unknown kind');
    if (!isHeaderText(command.waxKey) || !isHeaderText(command.tokenizationSessionId)) {
      return failure('auth', USER_MESSAGES.auth, 'missing or malformed wax key or session id');
    }
    // The SDK names the fields mounted now; a port whose frame was unmounted is not asked.
    const fields = Array.isArray(command.fields) ? command.fields : FIELDS;
    if (!kind.required.every((f) => fields.includes(f) && ports.has(f))) {
      return failure('config', USER_MESSAGES.notMounted, 'required fields are not attached');
    }
    const values = await collect(kind, fields, command.requestId);
    if (!values) return failure('unknown', USER_MESSAGES.fieldGone, 'a field did not answer');
    const checked = command.kind === 'card' ? checkCard(values, new Date()) : checkBank(values);
    if (checked.error) return failure('validation', checked.error, checked.error);
    addNames(checked.data, command.billing);
    const body = JSON.stringify({ type: command.kind, data: checked.data });
    const answer = await post(body, command);
    if (answer.failure) return answer.failure;
    const { status, json } = answer;
    if (status >= 200 && status < 300 && json && json.success !== false && typeof json.token === 'string') {
      return successFrom(command.kind, json);
    }
    return errorFromResponse(status, json);
  }

  async function onTokenize(command) {
    if (typeof command.requestId !== 'string' || !REQUEST_ID_PATTERN.test(command.requestId)) return;
    let result;
    try {
      result = await tokenize(command);
    } catch (_) {
      // Our own bug; its message is not passed on, in case it quoted anything.
      result = failure('unknown', USER_MESSAGES.generic, 'tokenizer error');
    }
    postToParent(Object.assign({ type: 'cardvault:result', requestId: command.requestId }, result));
  }

  function onMessage(event) {
    if (event.source !== window.parent || event.origin !== ORIGIN) return;
    const message = event.data;
    if (!message || typeof message !== 'object' || message.vault !== VAULT) return;
    if (message.type === 'cardvault:attach') attach(message.field, message.frameName);
    else if (message.type === 'cardvault:tokenize') onTokenize(message);
  }

  // Without a merchant origin and a vault id there is nobody we may answer.
  if (!Rules || window.parent === window || !ORIGIN || !VAULT_ID_PATTERN.test(VAULT)) return;
  window.addEventListener('message', onMessage);
  postToParent({ type: 'cardvault:ready', field: 'tokenizer' });
})();
