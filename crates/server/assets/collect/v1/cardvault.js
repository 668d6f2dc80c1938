/* cardvault.js: the browser SDK for cardvault's hosted card fields (collect/v1).
 *
 * Loaded by the merchant's page from the vault (<script src="https://VAULT/collect/v1/cardvault.js">),
 * it lays out the vault's field frames and a hidden tokenizer frame, relays their state as
 * events, and asks the tokenizer for tokens. It never sees a card number, expiry, CVC or bank
 * number: those go from each field frame to the tokenizer over a MessageChannel that the
 * tokenizer hands to the field directly. This page only ever gets tokens and display facts.
 *
 * The public surface mirrors Ozura Elements (OzVault.create, createElement, createToken, ...),
 * so it is published as both window.CardVault and window.OzVault. Classic script, ES2020, no
 * dependencies: the file is served as written, and its integrity hash is the file's. */
(function () {
  'use strict';

  // Where this file came from is, by default, where the frames are: read it now, because
  // document.currentScript is only set while the script first runs.
  const SCRIPT_ORIGIN = (function () {
    try {
      return new URL(document.currentScript.src).origin;
    } catch (_) {
      return null;
    }
  })();

  const FRAME_PATH = '/collect/v1/';
  const DEFAULT_LOAD_TIMEOUT_MS = 10000;
  const DEFAULT_MAX_TOKENIZE_CALLS = 3;
  const TOKENIZE_TIMEOUT_MS = 30000;
  const DEFAULT_FRAME_HEIGHT_PX = 44;
  const MAX_FRAME_HEIGHT_PX = 1000;
  const EXPIRED_SESSION_MESSAGE = 'Client session expired or not found';

  const CARD_TYPES = ['cardNumber', 'expirationDate', 'cvv'];
  const BANK_TYPES = ['accountNumber', 'routingNumber'];
  const REQUIRED = { card: ['cardNumber', 'expirationDate'], bank: BANK_TYPES };
  const FRAMES = {
    cardNumber: { file: 'card-number.html', title: 'Card number' },
    expirationDate: { file: 'expiration-date.html', title: 'Expiration date' },
    cvv: { file: 'cvv.html', title: 'Security code' },
    accountNumber: { file: 'account-number.html', title: 'Account number' },
    routingNumber: { file: 'routing-number.html', title: 'Routing number' },
  };
  const EVENTS = ['ready', 'change', 'focus', 'blur', 'loaderror'];
  const STYLE_STATES = ['base', 'focus', 'invalid', 'complete', 'placeholder'];
  const THEMES = ['default', 'night', 'flat'];
  const RETRYABLE = ['network', 'timeout', 'server'];
  const CONTAINER_CLASS = 'CardVaultElement';

  // Shopper-facing messages the SDK itself produces (the tokenizer words the rest).
  const SESSION_FAILED = 'Could not start a secure payment session. Please try again.';
  const TIMED_OUT = 'The request timed out. Please try again.';
  const NOT_PROCESSED = 'Your payment details could not be processed. Please try again.';

  // ---------------------------------------------------------------------------------------
  // Errors
  // ---------------------------------------------------------------------------------------

  /** What createToken and create reject with. `message` is fit for the shopper, `raw` is the
   * vault's own wording (for logs), `retryable` says whether trying again may help. */
  class CardVaultError extends Error {
    constructor(message, errorCode, raw) {
      super(message);
      this.name = 'CardVaultError';
      this.errorCode = errorCode || 'unknown';
      this.raw = raw === undefined ? message : raw;
      this.retryable = RETRYABLE.includes(this.errorCode);
    }
  }

  function configError(message) {
    return new CardVaultError(message, 'config', message);
  }

  function messageOf(err) {
    return err && typeof err.message === 'string' ? err.message : String(err);
  }

  /** Calls merchant code (event handlers, callbacks) so that its exceptions surface in the
   * console without breaking ours. */
  function callSafely(fn, arg) {
    try {
      fn(arg);
    } catch (err) {
      if (typeof window.reportError === 'function') window.reportError(err);
      else setTimeout(() => { throw err; });
    }
  }

  // ---------------------------------------------------------------------------------------
  // Small helpers
  // ---------------------------------------------------------------------------------------

  function randomHex(bytes) {
    const buf = new Uint8Array(bytes);
    crypto.getRandomValues(buf);
    return Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  /** A v4 UUID. crypto.randomUUID exists only in secure contexts; a plain-http test page
   * still gets a well-formed id. */
  function uuid4() {
    if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
    const h = randomHex(16).split('');
    h[12] = '4';
    h[16] = '89ab'[parseInt(h[16], 16) & 3];
    const s = h.join('');
    return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
  }

  function isPlainObject(value) {
    return value !== null && typeof value === 'object' && !Array.isArray(value);
  }

  function whenBodyExists() {
    if (document.body) return Promise.resolve();
    return new Promise((resolve) => document.addEventListener('DOMContentLoaded', resolve, { once: true }));
  }

  // ---------------------------------------------------------------------------------------
  // Options
  // ---------------------------------------------------------------------------------------

  function frameOriginFrom(frameBaseUrl) {
    const base = frameBaseUrl === undefined ? SCRIPT_ORIGIN : frameBaseUrl;
    if (typeof base !== 'string' || base === '') {
      throw configError(
        'frameBaseUrl is required when cardvault.js is not loaded from the vault by a <script src> tag.',
      );
    }
    let url;
    try {
      url = new URL(base);
    } catch (_) {
      throw configError('frameBaseUrl must be an absolute URL, such as https://vault.example.');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw configError('frameBaseUrl must be an http(s) URL.');
    }
    return url.origin;
  }

  function optionalFunction(options, name) {
    if (options[name] !== undefined && typeof options[name] !== 'function') {
      throw configError(name + ' must be a function.');
    }
    return options[name];
  }

  function positiveNumber(value, name, fallback) {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      throw configError(name + ' must be a positive number.');
    }
    return value;
  }

  /** maxTokenizeCalls: a positive integer, or null for no proactive refresh. */
  function tokenizeCallLimit(value) {
    if (value === undefined) return DEFAULT_MAX_TOKENIZE_CALLS;
    if (value === null) return null;
    if (!Number.isInteger(value) || value < 1) {
      throw configError('maxTokenizeCalls must be a positive integer (or null for no limit).');
    }
    return value;
  }

  function validateAppearance(appearance) {
    if (appearance === undefined) return undefined;
    if (!isPlainObject(appearance)) throw configError('appearance must be an object.');
    if (appearance.theme !== undefined && !THEMES.includes(appearance.theme)) {
      throw configError('appearance.theme must be one of: ' + THEMES.join(', ') + '.');
    }
    if (appearance.variables !== undefined && !isPlainObject(appearance.variables)) {
      throw configError('appearance.variables must be an object.');
    }
    return appearance;
  }

  /** Fonts the frames load with the FontFace API. The frames' CSP allows fonts from the vault
   * itself and data: URLs only, so a src elsewhere is refused by the browser. */
  function validateFonts(fonts) {
    if (fonts === undefined) return [];
    if (!Array.isArray(fonts)) throw configError('fonts must be an array.');
    const out = [];
    for (const font of fonts) {
      if (!isPlainObject(font)) throw configError('each font must be an object.');
      if (font.cssSrc !== undefined) {
        console.warn('cardvault: fonts[].cssSrc is not supported (the frames load no external '
          + 'style sheets); use { family, src }.');
        continue;
      }
      if (typeof font.family !== 'string' || typeof font.src !== 'string') {
        throw configError('each font needs a family and a src string.');
      }
      const src = /^\s*(url|local)\s*\(/i.test(font.src) ? font.src : 'url(' + JSON.stringify(font.src) + ')';
      const clean = { family: font.family, src };
      for (const key of ['weight', 'style', 'display', 'unicodeRange']) {
        if (font[key] !== undefined) clean[key] = String(font[key]);
      }
      out.push(clean);
    }
    return out;
  }

  function validateOptions(options) {
    if (!isPlainObject(options)) throw configError('CardVault.create needs an options object.');
    if (typeof options.pubKey !== 'string' || options.pubKey.trim() === '') {
      throw configError('pubKey is required.');
    }
    if (typeof options.fetchWaxKey !== 'function') {
      throw configError('fetchWaxKey is required: a function that returns a wax key from your server.');
    }
    return {
      pubKey: options.pubKey.trim(),
      fetchWaxKey: options.fetchWaxKey,
      frameOrigin: frameOriginFrom(options.frameBaseUrl),
      appearance: validateAppearance(options.appearance),
      fonts: validateFonts(options.fonts),
      onReady: optionalFunction(options, 'onReady'),
      onLoadError: optionalFunction(options, 'onLoadError'),
      onWaxRefresh: optionalFunction(options, 'onWaxRefresh'),
      loadTimeoutMs: positiveNumber(options.loadTimeoutMs, 'loadTimeoutMs', DEFAULT_LOAD_TIMEOUT_MS),
      maxTokenizeCalls: tokenizeCallLimit(options.maxTokenizeCalls),
    };
  }

  function validateElementOptions(options) {
    if (options === undefined) return {};
    if (!isPlainObject(options)) throw configError('Element options must be an object.');
    if (options.placeholder !== undefined && typeof options.placeholder !== 'string') {
      throw configError('placeholder must be a string.');
    }
    if (options.disabled !== undefined && typeof options.disabled !== 'boolean') {
      throw configError('disabled must be a boolean.');
    }
    if (options.style !== undefined && !isPlainObject(options.style)) {
      throw configError('style must be an object of states (base, focus, invalid, complete, placeholder).');
    }
    positiveNumber(options.loadTimeoutMs, 'loadTimeoutMs', undefined);
    return options;
  }

  // ---------------------------------------------------------------------------------------
  // Appearance: theme, then variables, then the element's own style
  // ---------------------------------------------------------------------------------------

  const SYSTEM_FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
  const THEME_VARIABLES = {
    default: {
      colorText: '#1f2937', colorBackground: 'transparent', colorPrimary: '#4f46e5',
      colorDanger: '#dc2626', colorSuccess: '#16a34a', colorPlaceholder: '#6b7280',
      colorBorder: '#d1d5db', fontFamily: SYSTEM_FONT, fontSize: '16px',
    },
    night: {
      colorText: '#f9fafb', colorBackground: 'transparent', colorPrimary: '#a5b4fc',
      colorDanger: '#f87171', colorSuccess: '#4ade80', colorPlaceholder: '#9ca3af',
      colorBorder: '#4b5563', fontFamily: SYSTEM_FONT, fontSize: '16px',
    },
  };
  THEME_VARIABLES.flat = THEME_VARIABLES.default;

  /** Style keys that variables map to directly, when given. */
  const VARIABLE_STYLE_KEYS = {
    fontFamily: 'fontFamily', fontSize: 'fontSize', fontWeight: 'fontWeight',
    lineHeight: 'lineHeight', letterSpacing: 'letterSpacing', padding: 'padding',
    borderRadius: 'borderRadius',
  };

  function themeStyle(appearance) {
    // No appearance: the frames' built-in look. {} or variables alone: the default theme.
    if (!appearance) return {};
    const theme = appearance.theme || 'default';
    const v = Object.assign({}, THEME_VARIABLES[theme], appearance.variables);
    const base = {
      color: v.colorText,
      backgroundColor: v.colorBackground,
      caretColor: v.colorPrimary,
    };
    for (const key of Object.keys(VARIABLE_STYLE_KEYS)) {
      if (v[key] !== undefined) base[VARIABLE_STYLE_KEYS[key]] = v[key];
    }
    const style = {
      base,
      focus: {},
      invalid: { color: v.colorDanger },
      complete: {},
      placeholder: { color: v.colorPlaceholder },
    };
    if (theme === 'flat') {
      base.borderRadius = '0';
      base.borderBottom = '1px solid ' + v.colorBorder;
      style.focus.borderBottomColor = v.colorPrimary;
      style.invalid.borderBottomColor = v.colorDanger;
      style.complete.borderBottomColor = v.colorSuccess;
    }
    return style;
  }

  /** The style sent to a frame: plain strings only (it crosses postMessage), per state. */
  function frameStyle(appearance, elementStyle) {
    const theme = themeStyle(appearance);
    const out = {};
    for (const state of STYLE_STATES) {
      const merged = Object.assign({}, theme[state], elementStyle && elementStyle[state]);
      const clean = {};
      for (const key of Object.keys(merged)) {
        const value = merged[key];
        if (typeof value === 'string' || typeof value === 'number') clean[key] = String(value);
      }
      out[state] = clean;
    }
    return out;
  }

  // ---------------------------------------------------------------------------------------
  // Elements
  // ---------------------------------------------------------------------------------------

  /** One field, laid out as an iframe of the vault's field page. */
  class VaultElement {
    constructor(vault, type, options) {
      this.elementType = type;
      this._vault = vault;
      this._options = Object.assign({}, options);
      this._listeners = new Map(EVENTS.map((name) => [name, new Set()]));
      this._iframe = null;
      this._container = null;
      this._loadTimer = null;
      this._resetFrameState();
    }

    _resetFrameState() {
      this._frameReady = false;
      this._attached = false;
      this._readyEmitted = false;
      this._state = { complete: false, empty: true, error: null, brand: 'unknown', focused: false };
    }

    get _frameName() {
      return 'cardvault-' + this._vault.vaultId + '-' + this.elementType;
    }

    /** Puts the field in `target` (a CSS selector or an element). Mounting again moves it. */
    mount(target) {
      this._vault._assertAlive();
      const container = typeof target === 'string' ? document.querySelector(target) : target;
      if (!container || container.nodeType !== 1) {
        throw configError(`mount() needs a CSS selector or an element in the page; got ${String(target)}.`);
      }
      if (this._iframe) this.unmount();
      const frame = FRAMES[this.elementType];
      const iframe = document.createElement('iframe');
      // The name is set before the frame loads: the tokenizer finds the field by it.
      iframe.name = this._frameName;
      iframe.title = frame.title;
      iframe.src = this._vault._frameUrl(frame.file);
      iframe.setAttribute('allowtransparency', 'true');
      iframe.setAttribute('scrolling', 'no');
      // Through the CSSOM: a merchant CSP without 'unsafe-inline' still allows this.
      Object.assign(iframe.style, {
        display: 'block', width: '100%', height: DEFAULT_FRAME_HEIGHT_PX + 'px', border: '0',
        margin: '0', padding: '0', overflow: 'hidden', background: 'transparent',
        // Matches the frame page's scheme, so Chromium keeps the frame transparent on pages
        // that declare a dark color-scheme.
        colorScheme: 'normal',
      });
      this._container = container;
      this._iframe = iframe;
      this._updateContainerClasses();
      container.appendChild(iframe);
      const timeout = this._options.loadTimeoutMs || this._vault._opts.loadTimeoutMs;
      this._loadTimer = setTimeout(() => this._onLoadTimeout(), timeout);
      return this;
    }

    unmount() {
      clearTimeout(this._loadTimer);
      this._loadTimer = null;
      if (this._iframe) this._iframe.remove();
      if (this._container) {
        this._container.classList.remove(
          CONTAINER_CLASS, CONTAINER_CLASS + '--focus', CONTAINER_CLASS + '--invalid',
          CONTAINER_CLASS + '--complete', CONTAINER_CLASS + '--empty',
        );
      }
      this._iframe = null;
      this._container = null;
      this._resetFrameState();
      return this;
    }

    on(event, handler) {
      this._listenersFor(event).add(this._checkHandler(handler));
      return this;
    }

    off(event, handler) {
      this._listenersFor(event).delete(handler);
      return this;
    }

    focus() {
      if (!this._iframe) return this;
      // Focus the frame first: a frame may not pull focus into itself without it.
      this._iframe.focus();
      this._post({ type: 'cardvault:focus' });
      return this;
    }

    clear() {
      this._post({ type: 'cardvault:clear' });
      return this;
    }

    update(options) {
      const clean = validateElementOptions(options);
      Object.assign(this._options, clean);
      if (this._frameReady) this._sendOptions();
      return this;
    }

    // ---- internals ----

    _listenersFor(event) {
      const set = this._listeners.get(event);
      if (!set) throw configError('Unknown event "' + event + '"; use one of: ' + EVENTS.join(', ') + '.');
      return set;
    }

    _checkHandler(handler) {
      if (typeof handler !== 'function') throw configError('Event handlers must be functions.');
      return handler;
    }

    _emit(event, payload) {
      for (const handler of Array.from(this._listeners.get(event))) callSafely(handler, payload);
    }

    _isSource(source) {
      return this._iframe !== null && source === this._iframe.contentWindow;
    }

    _post(message) {
      if (!this._iframe || !this._iframe.contentWindow) return;
      message.vault = this._vault.vaultId;
      this._iframe.contentWindow.postMessage(message, this._vault._frameOrigin);
    }

    _sendOptions() {
      const options = { style: frameStyle(this._vault._opts.appearance, this._options.style) };
      if (this._options.placeholder !== undefined) options.placeholder = this._options.placeholder;
      if (this._options.disabled !== undefined) options.disabled = this._options.disabled;
      if (this._vault._opts.fonts.length) options.fonts = this._vault._opts.fonts;
      this._post({ type: 'cardvault:update', options });
    }

    _onLoadTimeout() {
      this._loadTimer = null;
      if (this._attached) return;
      this._emit('loaderror', {
        elementType: this.elementType,
        message: 'The ' + FRAMES[this.elementType].title.toLowerCase() + ' field did not load in time.',
      });
    }

    _onFrameMessage(message) {
      switch (message.type) {
        case 'cardvault:ready':
          // A reloaded frame has lost its port: it is attached afresh.
          this._frameReady = true;
          this._attached = false;
          this._sendOptions();
          this._vault._fieldReady(this);
          break;
        case 'cardvault:change':
          this._onChange(message);
          break;
        case 'cardvault:focus':
        case 'cardvault:blur':
          this._state.focused = message.type === 'cardvault:focus';
          this._updateContainerClasses();
          this._emit(this._state.focused ? 'focus' : 'blur', { elementType: this.elementType });
          break;
        case 'cardvault:resize':
          this._onResize(message.height);
          break;
        default:
          break;
      }
    }

    /** The tokenizer holds this field's port: the field can be tokenized, so it is ready. */
    _onAttached() {
      this._attached = true;
      clearTimeout(this._loadTimer);
      this._loadTimer = null;
      if (this._readyEmitted) return;
      this._readyEmitted = true;
      this._emit('ready', { elementType: this.elementType });
    }

    _onChange(message) {
      const state = this._state;
      state.complete = message.complete === true;
      state.empty = message.empty === true;
      state.error = typeof message.error === 'string' ? message.error : null;
      const event = {
        elementType: this.elementType,
        complete: state.complete,
        empty: state.empty,
        error: state.error,
      };
      if (this.elementType === 'cardNumber') {
        state.brand = typeof message.brand === 'string' ? message.brand : 'unknown';
        event.brand = state.brand;
      }
      this._updateContainerClasses();
      this._emit('change', event);
    }

    _onResize(height) {
      if (!this._iframe || typeof height !== 'number' || !Number.isFinite(height)) return;
      const px = Math.min(Math.max(Math.ceil(height), 1), MAX_FRAME_HEIGHT_PX);
      this._iframe.style.height = px + 'px';
    }

    /** Stripe-style state classes on the merchant's container, so the page can draw borders
     * and focus rings around the frame. */
    _updateContainerClasses() {
      if (!this._container) return;
      const list = this._container.classList;
      const s = this._state;
      list.add(CONTAINER_CLASS);
      list.toggle(CONTAINER_CLASS + '--focus', s.focused);
      list.toggle(CONTAINER_CLASS + '--invalid', s.error !== null);
      list.toggle(CONTAINER_CLASS + '--complete', s.complete);
      list.toggle(CONTAINER_CLASS + '--empty', s.empty);
    }
  }

  // ---------------------------------------------------------------------------------------
  // The vault
  // ---------------------------------------------------------------------------------------

  class Vault {
    constructor(opts) {
      this.vaultId = 'v' + randomHex(12);
      this._opts = opts;
      this._frameOrigin = opts.frameOrigin;
      this._sessionId = uuid4();
      this._waxKey = null;
      this._successes = 0;
      this._refreshing = null;
      this._busy = false;
      this._destroyed = false;
      this._tokenizer = null;
      this._tokenizerReady = false;
      this._readyFired = false;
      this._loadTimer = null;
      this._elements = new Map();
      this._pending = new Map();
      this._onMessage = this._onMessage.bind(this);
      window.addEventListener('message', this._onMessage);
    }

    /** True once the tokenizer frame has loaded and a wax key is held. */
    get isReady() {
      return !this._destroyed && this._tokenizerReady && this._waxKey !== null;
    }

    createElement(type, options) {
      return this._createElement(type, options, CARD_TYPES, 'createElement');
    }

    getElement(type) {
      return CARD_TYPES.includes(type) ? this._elements.get(type) || null : null;
    }

    createBankElement(type, options) {
      return this._createElement(type, options, BANK_TYPES, 'createBankElement');
    }

    getBankElement(type) {
      return BANK_TYPES.includes(type) ? this._elements.get(type) || null : null;
    }

    /** Tokenizes the mounted card fields. Resolves { token, cvcSession, card, billing }. */
    async createToken(options) {
      const opts = options === undefined ? {} : options;
      if (!isPlainObject(opts)) throw configError('createToken() takes an options object.');
      const billing = normalizeBilling(opts.billing, false);
      const result = await this._tokenize('card', billing, 'createToken');
      return {
        token: result.token,
        cvcSession: result.cvcSession === undefined ? null : result.cvcSession,
        card: Object.assign({}, result.card),
        billing,
      };
    }

    /** Tokenizes the mounted bank fields. Resolves { token, bank: { last4, routingNumber } }. */
    async createBankToken(holder) {
      const billing = normalizeBilling(holder, true);
      const result = await this._tokenize('bank', billing, 'createBankToken');
      return { token: result.token, bank: Object.assign({}, result.bank) };
    }

    /** Removes every frame and listener; pending tokenizations fail. Safe to call twice. */
    destroy() {
      if (this._destroyed) return;
      this._destroyed = true;
      window.removeEventListener('message', this._onMessage);
      clearTimeout(this._loadTimer);
      for (const element of this._elements.values()) element.unmount();
      this._elements.clear();
      if (this._tokenizer) this._tokenizer.remove();
      this._tokenizer = null;
      this._tokenizerReady = false;
      this._waxKey = null;
      const destroyed = failureOf('config', 'The payment form was closed.', 'vault destroyed');
      for (const finish of Array.from(this._pending.values())) finish(destroyed);
    }

    // ---- internals: frames ----

    _assertAlive() {
      if (this._destroyed) {
        throw configError('This vault has been destroyed; create a new one with CardVault.create().');
      }
    }

    _frameUrl(file) {
      const query = new URLSearchParams({
        pk: this._opts.pubKey,
        origin: location.origin,
        vault: this.vaultId,
      });
      return this._frameOrigin + FRAME_PATH + file + '?' + query.toString();
    }

    _createElement(type, options, allowed, method) {
      this._assertAlive();
      if (!allowed.includes(type)) {
        throw configError(method + '() takes one of: ' + allowed.join(', ') + '; got ' + String(type) + '.');
      }
      if (this._elements.has(type)) {
        const getter = allowed === CARD_TYPES ? 'getElement' : 'getBankElement';
        throw configError(`A ${type} element already exists in this vault; use ${getter}('${type}').`);
      }
      const element = new VaultElement(this, type, validateElementOptions(options));
      this._elements.set(type, element);
      return element;
    }

    async _mountTokenizer() {
      await whenBodyExists();
      if (this._destroyed) return;
      const iframe = document.createElement('iframe');
      iframe.name = 'cardvault-' + this.vaultId + '-tokenizer';
      iframe.title = 'Payment tokenizer (hidden)';
      iframe.src = this._frameUrl('tokenizer.html');
      iframe.tabIndex = -1;
      iframe.setAttribute('aria-hidden', 'true');
      // Not display:none, which lets browsers deprioritise the frame; invisible and inert instead.
      Object.assign(iframe.style, {
        position: 'absolute', width: '1px', height: '1px', border: '0', margin: '0',
        padding: '0', overflow: 'hidden', visibility: 'hidden', pointerEvents: 'none',
        left: '-10000px', top: '0',
      });
      this._tokenizer = iframe;
      document.body.appendChild(iframe);
      this._loadTimer = setTimeout(() => this._onTokenizerTimeout(), this._opts.loadTimeoutMs);
    }

    _onTokenizerTimeout() {
      this._loadTimer = null;
      if (this._tokenizerReady || this._destroyed) return;
      if (this._opts.onLoadError) callSafely(this._opts.onLoadError);
    }

    _postToTokenizer(message) {
      if (!this._tokenizer || !this._tokenizer.contentWindow) return false;
      message.vault = this.vaultId;
      this._tokenizer.contentWindow.postMessage(message, this._frameOrigin);
      return true;
    }

    /** Only messages from our own frames, at the vault's origin, about this vault. */
    _onMessage(event) {
      if (event.origin !== this._frameOrigin) return;
      const message = event.data;
      if (!isPlainObject(message) || message.vault !== this.vaultId) return;
      if (typeof message.type !== 'string') return;
      if (this._tokenizer && event.source === this._tokenizer.contentWindow) {
        this._onTokenizerMessage(message);
        return;
      }
      const element = this._elements.get(message.field);
      if (element && element._isSource(event.source)) element._onFrameMessage(message);
    }

    _onTokenizerMessage(message) {
      if (message.type === 'cardvault:ready') {
        this._onTokenizerReady();
      } else if (message.type === 'cardvault:attached') {
        const element = this._elements.get(message.field);
        if (element && element._frameReady) element._onAttached();
      } else if (message.type === 'cardvault:result' && typeof message.requestId === 'string') {
        const finish = this._pending.get(message.requestId);
        if (finish) finish(message);
      }
    }

    _onTokenizerReady() {
      if (this._tokenizerReady) return;
      this._tokenizerReady = true;
      clearTimeout(this._loadTimer);
      this._loadTimer = null;
      for (const element of this._elements.values()) {
        if (element._frameReady && !element._attached) this._attach(element);
      }
      this._maybeFireReady();
    }

    _fieldReady(element) {
      if (this._tokenizerReady) this._attach(element);
    }

    /** Asks the tokenizer to open a channel straight to the field frame. */
    _attach(element) {
      this._postToTokenizer({
        type: 'cardvault:attach',
        field: element.elementType,
        frameName: element._frameName,
      });
    }

    _maybeFireReady() {
      if (this._readyFired || !this.isReady) return;
      this._readyFired = true;
      if (this._opts.onReady) callSafely(this._opts.onReady);
    }

    // ---- internals: wax keys ----

    async _fetchWaxKey() {
      let key;
      try {
        key = await this._opts.fetchWaxKey(this._sessionId);
      } catch (err) {
        throw new CardVaultError(SESSION_FAILED, 'auth', 'fetchWaxKey failed: ' + messageOf(err));
      }
      if (typeof key !== 'string' || key.trim() === '') {
        throw new CardVaultError(SESSION_FAILED, 'auth', 'fetchWaxKey returned an empty wax key');
      }
      return key.trim();
    }

    async _mintInitialWaxKey() {
      this._waxKey = await this._fetchWaxKey();
      this._maybeFireReady();
    }

    /** A new wax key for the same checkout (same tokenization session id). */
    async _remint() {
      const key = await this._fetchWaxKey();
      if (this._destroyed) return;
      this._waxKey = key;
      this._successes = 0;
      if (this._opts.onWaxRefresh) callSafely(this._opts.onWaxRefresh);
    }

    /** Waits for a proactive refresh under way; if the key is still used up (that refresh
     * failed), refreshes now, so the error reaches the caller. */
    async _ensureFreshWaxKey() {
      if (this._refreshing) await this._refreshing;
      const limit = this._opts.maxTokenizeCalls;
      if (limit !== null && this._successes >= limit) await this._remint();
    }

    _countSuccess() {
      this._successes += 1;
      const limit = this._opts.maxTokenizeCalls;
      if (limit === null || this._successes < limit) return;
      // The vault refuses the key from now on: get the next one before it is needed.
      this._refreshing = this._remint()
        .catch(() => {})
        .then(() => { this._refreshing = null; });
    }

    // ---- internals: tokenizing ----

    _preflight(kind, method) {
      this._assertAlive();
      if (!this.isReady) {
        throw configError(`Vault not ready. Ensure the page is fully loaded before calling ${method}().`);
      }
      if (this._busy) {
        throw configError('A tokenization is already in progress. Wait for it to complete before '
          + `calling ${method}() again.`);
      }
      const types = kind === 'card' ? CARD_TYPES : BANK_TYPES;
      const attached = types.filter((t) => this._elements.has(t) && this._elements.get(t)._attached);
      if (attached.length === 0) {
        throw configError('No elements are mounted and ready. Mount at least one element and wait '
          + `for its ready event before calling ${method}().`);
      }
      const missing = REQUIRED[kind].filter((t) => !attached.includes(t));
      if (missing.length) {
        const noun = missing.length > 1 ? 'elements' : 'element';
        throw configError(`${method}() needs the ${missing.join(' and ')} ${noun} mounted and ready.`);
      }
      return attached;
    }

    async _tokenize(kind, billing, method) {
      const fields = this._preflight(kind, method);
      const names = holderNames(billing);
      this._busy = true;
      try {
        await this._ensureFreshWaxKey();
        let result = await this._send(kind, names, fields);
        if (isExpiredSession(result)) {
          // The key expired, was revoked or used up since it was minted: one new key, one retry.
          await this._remint();
          result = await this._send(kind, names, fields);
        }
        if (!result.ok) throw errorOf(result.error);
        this._countSuccess();
        return result;
      } finally {
        this._busy = false;
      }
    }

    /** One round trip to the tokenizer; resolves with its result message, or a timeout. */
    _send(kind, names, fields) {
      this._assertAlive();
      const requestId = randomHex(16);
      return new Promise((resolve) => {
        const finish = (result) => {
          clearTimeout(timer);
          this._pending.delete(requestId);
          resolve(result);
        };
        const timer = setTimeout(
          () => finish(failureOf('timeout', TIMED_OUT, 'no answer from the tokenizer in 30 s')),
          TOKENIZE_TIMEOUT_MS,
        );
        this._pending.set(requestId, finish);
        const sent = this._postToTokenizer({
          type: 'cardvault:tokenize',
          requestId,
          kind,
          waxKey: this._waxKey,
          tokenizationSessionId: this._sessionId,
          billing: names,
          fields,
        });
        if (!sent) {
          finish(failureOf('config', 'The payment form is not available.', 'tokenizer frame missing'));
        }
      });
    }
  }

  function failureOf(errorCode, message, raw) {
    return { ok: false, error: { errorCode, message, raw, status: 0 } };
  }

  function isExpiredSession(result) {
    const error = result.ok ? null : result.error;
    return Boolean(error) && error.status === 404 && error.raw === EXPIRED_SESSION_MESSAGE;
  }

  function errorOf(error) {
    const e = isPlainObject(error) ? error : {};
    const message = typeof e.message === 'string' ? e.message : NOT_PROCESSED;
    const code = typeof e.errorCode === 'string' ? e.errorCode : 'unknown';
    return new CardVaultError(message, code, typeof e.raw === 'string' ? e.raw : message);
  }

  /** Only the holder's names go to the tokenizer: they are all the vault stores, and other
   * billing fields (which may not even survive postMessage) stay on this page. */
  function holderNames(billing) {
    const names = {};
    if (billing && typeof billing.firstName === 'string') names.firstName = billing.firstName;
    if (billing && typeof billing.lastName === 'string') names.lastName = billing.lastName;
    return names;
  }

  /** The billing object echoed back, with the names trimmed; both names are required for bank
   * accounts. */
  function normalizeBilling(billing, required) {
    if (billing === undefined && !required) return undefined;
    if (!isPlainObject(billing)) {
      if (required) throw new CardVaultError('First and last name are required.', 'validation');
      throw configError('billing must be an object.');
    }
    const out = {};
    for (const key of ['firstName', 'lastName']) {
      const value = billing[key];
      if (value !== undefined && value !== null && typeof value !== 'string') {
        throw configError(key + ' must be a string.');
      }
      if (typeof value === 'string' && value.trim() !== '') out[key] = value.trim();
    }
    if (required && (!out.firstName || !out.lastName)) {
      throw new CardVaultError('First and last name are required.', 'validation');
    }
    return Object.assign({}, billing, out);
  }

  // ---------------------------------------------------------------------------------------
  // CardVault.create
  // ---------------------------------------------------------------------------------------

  function abortReason(signal) {
    if (signal.reason !== undefined) return signal.reason;
    return new DOMException('The operation was aborted.', 'AbortError');
  }

  /** Resolves with a vault once the first wax key is held. The tokenizer frame loads at the
   * same time; onReady (or vault.isReady) says when tokenizing can start, and may come before
   * this promise resolves. */
  async function create(options, signal) {
    const opts = validateOptions(options);
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw configError('The second argument of CardVault.create must be an AbortSignal.');
    }
    if (signal && signal.aborted) throw abortReason(signal);
    const vault = new Vault(opts);
    let onAbort = null;
    const aborted = new Promise((_, reject) => {
      if (!signal) return;
      onAbort = () => {
        vault.destroy();
        reject(abortReason(signal));
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      // The tokenizer loads while the wax key is fetched; a failure to add it shows up as the
      // load timeout (onLoadError), not as a failed create().
      vault._mountTokenizer().catch(() => vault._onTokenizerTimeout());
      await Promise.race([vault._mintInitialWaxKey(), aborted]);
    } catch (err) {
      vault.destroy();
      if (signal) signal.removeEventListener('abort', onAbort);
      throw err;
    }
    // The signal stays attached: aborting it later tears the vault down ("advanced teardown").
    if (signal) {
      signal.removeEventListener('abort', onAbort);
      signal.addEventListener('abort', () => vault.destroy(), { once: true });
    }
    return vault;
  }

  const CardVault = Object.freeze({
    version: '1',
    create,
    CardVaultError,
    OzError: CardVaultError,
  });

  window.CardVault = CardVault;
  window.OzVault = CardVault;
})();
