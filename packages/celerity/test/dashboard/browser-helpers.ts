/**
 * A real browser for the dashboard's tests: Debian's chromium through
 * playwright-core (never `npx playwright install`, which downloads a browser).
 * Where the binary is missing the tests are skipped on a workstation and fail
 * in CI (CI=true): .ci/run installs it.
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

/** Per test: a browser on a shared CI machine can be slow to start and to paint. */
export const BROWSER_TEST_TIMEOUT = 90_000;

/** expect.poll's options for what the page shows: its default second is short for a browser on a busy machine. */
export const POLL = { timeout: 15_000, interval: 100 } as const;

export const CHROMIUM = process.env.CELERITY_CHROMIUM ?? '/usr/bin/chromium';

/** True when the browser tests can run here; throws in CI when they cannot, so that a missing browser fails the build rather than hiding. */
export function browserAvailable(): boolean {
  if (existsSync(CHROMIUM)) return true;
  if (process.env.CI === 'true' || process.env.CI === '1') {
    throw new Error(`The dashboard's browser tests need chromium at ${CHROMIUM} (apt-get install -y chromium; .ci/run installs it), and CI is set: failing rather than skipping`);
  }
  return false;
}

export async function launch(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
}

/** A fresh context (its own cookies) with a 1280-wide window, failing on any error the page logs. */
export async function newPage(browser: Browser, errors: string[], opts: { width?: number; colorScheme?: 'light' | 'dark' } = {}): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport: { width: opts.width ?? 1280, height: 900 }, colorScheme: opts.colorScheme ?? 'light' });
  // A step that hangs fails at that step, well within the test's own timeout (BROWSER_TEST_TIMEOUT).
  context.setDefaultTimeout(20_000);
  const page = await context.newPage();
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    // A refused API call logs a resource error the page handles itself and shows (400, 401, 403, 404, 409 such as job_not_delayed, 422 such as invalid_input, 429 for a blocked address).
    if (msg.type() === 'error' && !/Failed to load resource: the server responded with a status of (40[01349]|42[29])/.test(msg.text())) errors.push(`console: ${msg.text()}`);
  });
  return { context, page };
}

/** Logs in through the form, as a person would. */
export async function login(page: Page, base: string, key: string): Promise<void> {
  await page.goto(`${base}/dashboard/`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
}
