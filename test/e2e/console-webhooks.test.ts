import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type Relay } from '../../src/app.js';
import { loadConfig } from '../../src/config/index.js';
import { type Browser, launchBrowser, SCREENSHOTS } from '../helpers/browser.js';
import { KEY, testEnv } from '../helpers/env.js';
import { sleep } from '../helpers/wait.js';
import { deadDeliveries, ListWebhookAdmin } from '../helpers/webhook-admin.js';

// The console's webhook panel in real Chromium, against a standalone relay
// given a webhook queue's admin side (in memory, the interface the Redis
// queue implements): queue depth, dead deliveries paged, retry and discard.

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
