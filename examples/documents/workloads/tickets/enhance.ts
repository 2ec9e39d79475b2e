/**
 * Offline ticket enrichment: what a support team wants first from a new
 * ticket, derived from its text by rules — a category, a suggested priority,
 * the things it mentions (error codes, URLs, emails, versions) and a one-line
 * summary. Deterministic and instant; a deployment that wants an LLM's reading
 * swaps this function, not the job around it.
 */

export type Priority = 'low' | 'medium' | 'high' | 'urgent';

export interface Ticket {
  ticket_id: string;
  tenant_id: string;
  description: string;
  priority: Priority;
}

export interface Enhancement {
  summary: string;
  category: string;
  suggested_priority: Priority;
  /** True when the suggested priority is higher than the reporter's. */
  escalate: boolean;
  mentions: { error_codes: string[]; urls: string[]; emails: string[]; versions: string[] };
  language_hints: string[];
}

const CATEGORIES: [string, RegExp][] = [
  ['outage', /\b(down|outage|unavailable|cannot (?:log ?in|access)|503|502|not loading)\b/i],
  ['security', /\b(breach|vulnerab\w*|leak\w*|phish\w*|unauthori[sz]ed|password reset|2fa|mfa)\b/i],
  ['billing', /\b(invoice|billing|charge[ds]?|refund|payment|subscription|credit card)\b/i],
  ['performance', /\b(slow|latency|timeout|timed out|lag\w*|performance)\b/i],
  ['bug', /\b(error|exception|crash\w*|bug|broken|fails?|failing|stack ?trace)\b/i],
  ['feature_request', /\b(feature|would like|could you add|request|enhancement|support for)\b/i],
  ['account', /\b(account|profile|email change|username|sign ?up|invite)\b/i],
];

const RANK: Record<Priority, number> = { low: 0, medium: 1, high: 2, urgent: 3 };

export function enhanceTicket(ticket: Ticket): Enhancement {
  const text = ticket.description;
  const category = CATEGORIES.find(([, re]) => re.test(text))?.[0] ?? 'general';
  let suggested: Priority = category === 'outage' || category === 'security' ? 'urgent' : category === 'bug' || category === 'performance' ? 'high' : category === 'billing' ? 'medium' : 'low';
  if (/\b(all (?:users|customers)|production|data loss|asap|urgent|critical)\b/i.test(text) && RANK[suggested] < RANK.high) suggested = 'high';
  const unique = (xs: Iterable<string>) => [...new Set(xs)].slice(0, 20);
  return {
    summary: summarise(text),
    category,
    suggested_priority: suggested,
    escalate: RANK[suggested] > RANK[ticket.priority],
    mentions: {
      error_codes: unique(text.match(/\b(?:[A-Z]{2,}[-_]?\d{2,}|E\d{3,}|HTTP ?[45]\d\d|[45]\d\d (?:error|status))\b/g) ?? []),
      // A sentence's full stop or comma after a URL is not part of it.
      urls: unique((text.match(/https?:\/\/[^\s<>"')]+/g) ?? []).map((u) => u.replace(/[.,;:!?]+$/, ''))),
      emails: unique(text.match(/[\w.+-]+@[\w-]+(?:\.[\w-]+)+/g) ?? []),
      versions: unique(text.match(/\bv?\d+\.\d+(?:\.\d+)?\b/g) ?? []),
    },
    language_hints: unique((text.match(/\b(java|python|node(?:\.js)?|typescript|go|ruby|php|android|ios|windows|macos|linux|chrome|firefox|safari)\b/gi) ?? []).map((s) => s.toLowerCase())),
  };
}

/** The first sentence, trimmed to a line. */
function summarise(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  const first = /^(.{10,}?[.!?])(\s|$)/.exec(flat)?.[1] ?? flat;
  return first.length > 140 ? `${first.slice(0, 137).trimEnd()}...` : first;
}
