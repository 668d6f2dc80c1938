// The merchant's own page script. It never sees a card number or CVC: the fields are the
// vault's frames, and createToken answers with a token, a CVC session and display details.
'use strict';

// What the page has learnt, for people (the status line) and for the browser tests.
window.checkout = { ready: false, loadError: false, changes: [], lastError: null, paid: null };

// Ready to take a card once the tokenizer and every field are.
const waitingFor = new Set(['tokenizer', 'cardNumber', 'expirationDate', 'cvv']);
function readied(part) {
  waitingFor.delete(part);
  window.checkout.ready = waitingFor.size === 0;
}

function meta(name) {
  return document.querySelector(`meta[name="${name}"]`).content;
}

function say(text) {
  document.getElementById('status').textContent = text;
}

async function postJson(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  return response.json();
}

async function start() {
  const vault = await CardVault.create({
    pubKey: meta('cardvault-pub-key'),
    frameBaseUrl: meta('cardvault-url'),
    // The merchant's backend mints the wax key with its secret API key.
    fetchWaxKey: async (tokenizationSessionId) =>
      (await postJson('/api/mint-wax', { tokenizationSessionId })).waxKey,
    onReady: () => readied('tokenizer'),
    onLoadError: () => {
      window.checkout.loadError = true;
      say('The card form could not be loaded.');
    },
    loadTimeoutMs: 5000,
  });
  const elements = [
    vault.createElement('cardNumber', { placeholder: '1234 1234 1234 1234' }),
    vault.createElement('expirationDate', { placeholder: 'MM / YY' }),
    vault.createElement('cvv', { placeholder: 'CVC' }),
  ];
  elements[0].mount('#card-number');
  elements[1].mount('#card-expiry');
  elements[2].mount('#card-cvv');
  for (const [index, element] of elements.entries()) {
    element.on('ready', () => readied(['cardNumber', 'expirationDate', 'cvv'][index]));
    element.on('change', (event) => {
      window.checkout.changes.push(event);
      document.getElementById('card-error').textContent = event.error || '';
    });
  }
  document.getElementById('pay-form').addEventListener('submit', async (submit) => {
    submit.preventDefault();
    const button = document.getElementById('pay');
    button.disabled = true;
    say('Paying…');
    try {
      const [firstName, ...rest] = document.getElementById('name').value.trim().split(/\s+/);
      const result = await vault.createToken({ billing: { firstName, lastName: rest.join(' ') } });
      const paid = await postJson('/api/pay', { token: result.token, cvcSession: result.cvcSession });
      window.checkout.paid = paid;
      say(paid.ok
        ? `Paid with ${result.card.brand} ending in ${result.card.last4}: ${paid.charge}`
        : `The payment failed: ${paid.message}`);
    } catch (error) {
      window.checkout.lastError = { errorCode: error.errorCode, message: error.message, raw: error.raw };
      say(error.message);
    } finally {
      button.disabled = false;
    }
  });
}

start().catch((error) => {
  window.checkout.lastError = { errorCode: error.errorCode, message: error.message, raw: error.raw };
  say(error.message);
});
