import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet, { type HelmetOptions } from 'helmet';

/** Helmet's own choices, kept where this file does not say otherwise. */
const SHARED = {
  // Also sent over plain HTTP: browsers ignore it unless it came over HTTPS
  // (RFC 6797, 8.1), and behind a TLS terminator the API cannot tell how the
  // request came unless the proxy is trusted (trustProxy), so sending it only
  // "over https" would mostly drop it. Without includeSubDomains: the API may
  // be mounted on a host whose subdomains are not Celerity's to force onto HTTPS.
  strictTransportSecurity: { maxAge: 31_536_000, includeSubDomains: false },
  // The CSP's frame-ancestors, for older browsers.
  xFrameOptions: { action: 'deny' },
} as const satisfies HelmetOptions;

/**
 * Helmet's settings for JSON answers (helmet, the library, is the reference
 * for which headers and values; they are computed from it once below). A JSON
 * answer loads nothing and may not be framed: CSP `default-src 'none';
 * frame-ancestors 'none'`. Headers that only mean something for an HTML
 * document (opener policy, origin-keyed agent cluster, DNS prefetching, IE's
 * download and XSS filter switches, Flash's cross-domain policy) are left to
 * routes that serve HTML: each costs every answer its bytes and its
 * validation.
 */
export const HELMET_OPTIONS = {
  ...SHARED,
  contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
  crossOriginOpenerPolicy: false,
  originAgentCluster: false,
  xDnsPrefetchControl: false,
  xDownloadOptions: false,
  xPermittedCrossDomainPolicies: false,
  xXssProtection: false,
} as const satisfies HelmetOptions;

/** Helmet's settings for HTML answers (`config: { celerity: { html: true } }`): all its headers but the CSP, which the page sets. */
export const HTML_HELMET_OPTIONS = { ...SHARED, contentSecurityPolicy: false } as const satisfies HelmetOptions;

/**
 * The headers helmet sends with {@link HELMET_OPTIONS}, computed once: the
 * API sets them on every answer (registerAbuseLimits), and so do the
 * server's `frameworkErrors` (a bad URL is refused before any route hook)
 * and raw `clientError` answers.
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze(headersOf(HELMET_OPTIONS));

/** The headers helmet sends with {@link HTML_HELMET_OPTIONS}. */
export const HTML_SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze(headersOf(HTML_HELMET_OPTIONS));

function headersOf(options: HelmetOptions): Record<string, string> {
  const headers: Record<string, string> = {};
  const response = {
    setHeader(name: string, value: string | number | readonly string[]) {
      headers[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : String(value);
    },
    removeHeader(name: string) {
      delete headers[name.toLowerCase()];
    },
  };
  helmet(options)({} as IncomingMessage, response as unknown as ServerResponse, (err?: unknown) => {
    if (err) throw err;
  });
  return headers;
}
