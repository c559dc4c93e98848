import { createServer, type Server } from 'node:http';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type Relay } from '../../src/app.js';
import { loadConfig } from '../../src/config/index.js';
import { type Browser, launchBrowser, SCREENSHOTS } from '../helpers/browser.js';
import { connectClient } from '../helpers/clients.js';
import { KEY, testEnv, token } from '../helpers/env.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { deadDeliveries, ListWebhookAdmin } from '../helpers/webhook-admin.js';

// The console's webhook panel in real Chromium. First against the relay's
// own webhook queue and a real receiver that fails until it is fixed: the
// dead letter shows, retry from the page delivers it. Then, for paging,
// against a queue's admin side in memory (the WebhookAdmin interface).

describe('the console and the relay webhook queue in Chromium', () => {
  let relay: Relay;
  let url: string;
  let receiver: Server;
  let browser: Browser;
  let fixed = false;
  const received: { type: string; user?: string }[] = [];

  beforeAll(async () => {
    // A receiver that answers 503 until it is fixed, then records what it gets.
    receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        if (!fixed) {
          res.writeHead(503).end('down for maintenance');
          return;
        }
        const parsed = JSON.parse(body) as { events?: { type: string; user?: string }[] } & {
          type?: string;
          user?: string;
        };
        received.push(...(parsed.events ?? [parsed as { type: string; user?: string }]));
        res.writeHead(200).end('ok');
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const hook = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/hooks`;
    relay = await buildApp(
      loadConfig(
        testEnv({
          PUSHRELAY_WEBHOOKS: hook,
          PUSHRELAY_WEBHOOK_SECRET: 'test-webhook-secret-0123456789',
          PUSHRELAY_WEBHOOK_EVENTS: 'user.online',
          PUSHRELAY_WEBHOOK_DEBOUNCE_SECONDS: '0',
          PUSHRELAY_WEBHOOK_RETRY_SECONDS: '1',
          PUSHRELAY_STATS_INTERVAL_SECONDS: '1',
        }),
      ),
    );
    await relay.http.listen({ port: 0, host: '127.0.0.1' });
    url = `http://127.0.0.1:${(relay.http.server.address() as { port: number }).port}`;
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
    await relay?.close();
    await new Promise((r) => receiver?.close(r));
  });

  it('shows a webhook the receiver refused until it gave up, and retrying it from the page delivers it', async () => {
    const zoe = await connectClient(url, await token('zoe'));
    const page = await browser.context.newPage();
    await page.goto(`${url}/console/`);
    await page.fill('#secret', KEY.secret);
    await page.click('#login-form button');
    const row = page.locator('#webhook-dead-rows tr', { hasText: 'user.online' });
    await waitFor(
      async () => {
        await page.click('#webhook-dead-first');
        return (await row.count()) === 1;
      },
      { what: 'the dead webhook in the page', intervalMs: 500 },
    );
    expect(await row.textContent()).toContain('503');
    // The queue-depth chart is fed by the queue itself (a number, not "not configured").
    await waitFor(async () => {
      const last = JSON.parse((await page.locator('#chart-webhooks').getAttribute('data-last')) ?? '[]');
      return typeof last[0] === 'number';
    });
    await page.locator('#webhook-stats', { hasText: '1 dead' }).waitFor();
    await page.locator('#dead').screenshot({ path: `${SCREENSHOTS}/console-webhook-dead.png` });

    fixed = true;
    const id = (await row.getAttribute('data-id'))!;
    await page.getByRole('button', { name: `Retry webhook ${id}` }).click();
    await page.locator('#webhook-status', { hasText: `${id} queued again` }).waitFor();
    await waitFor(() => received.some((e) => e.type === 'user.online'), { what: 'the webhook delivered' });
    expect(await row.count()).toBe(0);
    zoe.close();
    await page.close();
  });
});

describe('the console webhook panel in Chromium', () => {
  let relay: Relay;
  let url: string;
  let browser: Browser;
  let page: Page;
  const webhooks = new ListWebhookAdmin();

  beforeAll(async () => {
    webhooks.dead = deadDeliveries(12);
    relay = await buildApp(loadConfig(testEnv({ PUSHRELAY_STATS_INTERVAL_SECONDS: '1' })), {
      webhookAdmin: webhooks,
    });
    await relay.http.listen({ port: 0, host: '127.0.0.1' });
    url = `http://127.0.0.1:${(relay.http.server.address() as { port: number }).port}`;
    browser = await launchBrowser();
    page = await browser.context.newPage();
  });
  afterAll(async () => {
    await browser?.close();
    await relay?.close();
  });

  it('lists dead deliveries page by page, retries and discards them', async () => {
    await page.goto(`${url}/console/`);
    await page.fill('#secret', KEY.secret);
    await page.click('#login-form button');
    await page.locator('#webhook-stats', { hasText: '2 queued · 1 retrying · 12 dead' }).waitFor();
    const rows = page.locator('#webhook-dead-rows tr');
    await rows.nth(9).waitFor();
    expect(await rows.count()).toBe(10);
    expect(await rows.first().textContent()).toContain('member_added');
    expect(await rows.first().textContent()).toContain('HTTP 502');
    // Standalone: the ingest stream is not there, and the page says why.
    await page.locator('#ingest-dead-status', { hasText: 'needs Redis' }).waitFor();

    await page.click('#webhook-dead-more');
    await page.locator('#webhook-dead-rows tr[data-id="w11"]').waitFor();
    expect(await rows.count()).toBe(2);
    await page.click('#webhook-dead-first');
    await page.locator('#webhook-dead-rows tr[data-id="w1"]').waitFor();

    await page.getByRole('button', { name: 'Retry webhook w2' }).click();
    await page.locator('#webhook-status', { hasText: 'w2 queued again' }).waitFor();
    expect(webhooks.retried).toEqual(['w2']);
    await page.getByRole('button', { name: 'Discard webhook w3' }).click();
    await page.locator('#webhook-status', { hasText: 'w3 discarded' }).waitFor();
    await page.locator('#webhook-stats', { hasText: '10 dead' }).waitFor();
    expect(await page.locator('#webhook-dead-rows tr[data-id="w2"]').count()).toBe(0);
    await page.locator('#dead').screenshot({ path: `${SCREENSHOTS}/console-webhooks.png` });
  });

  it('on sign-out forgets what it showed and asks the relay for nothing more', async () => {
    await page.click('#sign-out');
    expect(await page.locator('#app').isVisible()).toBe(false);
    expect(await page.locator('#login').isVisible()).toBe(true);
    expect(await page.evaluate('document.activeElement?.id')).toBe('secret');
    expect(await page.locator('#webhook-dead-rows tr').count()).toBe(0);
    expect(await page.locator('#node-rows tr').count()).toBe(0);
    // A poll already on its way when the button was pressed may still be reported; count from a moment later.
    await sleep(500);
    const asked: string[] = [];
    page.on('request', (r) => asked.push(new URL(r.url()).pathname));
    // Three sampling intervals: a poll left running would have asked by now.
    await sleep(3000);
    expect(asked.filter((p) => p.startsWith('/v1/'))).toEqual([]);
  });
});
