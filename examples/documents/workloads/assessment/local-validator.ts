/**
 * The default, offline validator: BM25 retrieval plus a few heuristics.
 */
import { Bm25Index, stem, tokenize, words, type ScoredPassage } from './bm25.ts';
import type { Criterion, CriterionResult, Evidence, PageText, ValidateOptions, Validator } from './types.ts';

/** What the local validator is, in one paragraph, for UIs, logs and docs. */
export const LOCAL_VALIDATOR_DESCRIPTION =
  'Local heuristic validator: lexical retrieval (BM25) of the passages that share words with the criterion, ' +
  'then rules on how many of its key terms they cover and whether a negation ("not", "no", "without"...) ' +
  'sits next to them. It does not understand the documents: synonyms, paraphrases, tables and reasoning ' +
  'escape it, and its confidence is a heuristic score, not a probability. Fine for demos, offline use and CI; ' +
  'set ANTHROPIC_API_KEY to use the Anthropic validator for real assessments.';

/** Tuning of {@link LocalValidator}; the defaults suit criteria of one or two sentences. */
export interface LocalValidatorOptions {
  /** Passages retrieved per criterion; 10 by default. */
  candidates?: number;
  /** Coverage at or above which the verdict is `pass`; 0.6 by default. */
  passCoverage?: number;
  /** Coverage below which nothing counts as relevant and the verdict is `fail`; 0.3 by default. */
  failCoverage?: number;
}

// Words that criteria use to phrase a requirement but that documents rarely
// repeat; counting them as key terms would lower every coverage.
const BOILERPLATE = new Set(
  [
    'must',
    'should',
    'shall',
    'need',
    'needs',
    'required',
    'require',
    'requires',
    'requirement',
    'include',
    'includes',
    'including',
    'describe',
    'describes',
    'state',
    'states',
    'specify',
    'specifies',
    'provide',
    'provides',
    'ensure',
    'ensures',
    'contain',
    'contains',
    'mention',
    'mentions',
    'clearly',
    'explicitly',
    'documented',
    'criterion',
    'whether',
    'evidence',
    'applicant',
    'submission',
  ].map(stem),
);

// Cues that, next to a key term, turn a match into evidence against the criterion.
const NEGATION_CUES = new Set([
  'no',
  'not',
  'none',
  'never',
  'neither',
  'nor',
  'without',
  'cannot',
  'lack',
  'lacks',
  'lacking',
  'missing',
  'absent',
  'excluded',
  'excludes',
  'exclude',
  'nothing',
  'unavailable',
  'unsupported',
  'dont',
  'doesnt',
  'didnt',
  'isnt',
  'arent',
  'wasnt',
  'werent',
  'wont',
  'hasnt',
  'havent',
  'hadnt',
  'cant',
  'couldnt',
]);

/** Words either side of a key term within which a negation cue counts. */
const NEGATION_WINDOW = 5;
const MAX_EVIDENCE = 3;

interface Candidate {
  hit: ScoredPassage;
  /** Share of the criterion's key terms this passage contains, in [0, 1]. */
  coverage: number;
  negated: boolean;
}

/**
 * The default, offline validator. **Lexical retrieval plus heuristics, not
 * understanding**: it finds the passages that share the most key terms with
 * the criterion (BM25 over sentence-sized passages) and decides:
 *
 * - `pass` when a passage (helped a little by the next best ones) covers at
 *   least `passCoverage` of the criterion's key terms and is not negated;
 * - `fail` when nothing covers `failCoverage`, or when the relevant passages
 *   are negated ("does not include encryption") and none affirms;
 * - `unclear` in between, or when affirming and negated passages conflict.
 *
 * Coverage is the share of key terms (stemmed words of name + description,
 * minus stop words and requirement boilerplate) found: 0.7 × the best single
 * passage + 0.3 × the union of the best three. Confidence grows with the
 * coverage and never exceeds 0.85.
 *
 * Fine for demos, offline use and CI; use {@link AnthropicValidator} for real
 * assessments. See {@link LOCAL_VALIDATOR_DESCRIPTION}.
 */
export class LocalValidator implements Validator {
  readonly name = 'local';
  readonly description = LOCAL_VALIDATOR_DESCRIPTION;
  private readonly candidates: number;
  private readonly passCoverage: number;
  private readonly failCoverage: number;

  constructor(opts: LocalValidatorOptions = {}) {
    this.candidates = opts.candidates ?? 10;
    this.passCoverage = opts.passCoverage ?? 0.6;
    this.failCoverage = opts.failCoverage ?? 0.3;
  }

  async validate(criterion: Criterion, pages: PageText[], opts: ValidateOptions = {}): Promise<CriterionResult> {
    opts.signal?.throwIfAborted();
    return this.decide(criterion, pages);
  }

  /** The synchronous core of {@link validate}. */
  decide(criterion: Criterion, pages: readonly PageText[]): CriterionResult {
    const result = (verdict: CriterionResult['verdict'], confidence: number, evidence: Evidence[], rationale: string): CriterionResult => ({
      criterion_id: criterion.id,
      verdict,
      confidence: round(clamp01(confidence)),
      evidence,
      rationale,
    });

    const keyTerms = keyTermsOf(criterion);
    if (keyTerms.length === 0) {
      return result('unclear', 0, [], 'The criterion has no distinctive words to search for.');
    }
    const index = Bm25Index.forPages(pages);
    if (index.passages.length === 0) {
      return result('unclear', 0, [], 'No text was extracted from the documents (scanned pages without a text layer?).');
    }

    const hits = index.search(keyTerms, this.candidates);
    const candidates: Candidate[] = hits.map((hit) => ({
      hit,
      coverage: hit.matched.length / keyTerms.length,
      negated: isNegated(hit.passage.text, new Set(hit.matched)),
    }));
    // Most complete passages first; BM25 breaks ties (rarer terms, shorter passages).
    candidates.sort((x, y) => y.coverage - x.coverage || y.hit.score - x.hit.score);

    const affirming = candidates.filter((c) => !c.negated);
    const negating = candidates.filter((c) => c.negated);
    const affirmCoverage = coverageOf(affirming, keyTerms);
    const negateCoverage = coverageOf(negating, keyTerms);
    const best = Math.max(affirmCoverage, negateCoverage);
    const terms = (n: number) => `${Math.round(n * 100)}% of the key terms (${keyTerms.join(', ')})`;

    if (best < this.failCoverage) {
      // Weak matches are not evidence of anything; only the rationale mentions them.
      return result(
        'fail',
        0.5 + 0.3 * (1 - best / this.failCoverage),
        [],
        candidates.length === 0 ? `No passage mentions any of the key terms (${keyTerms.join(', ')}).` : `The closest passages cover only ${terms(best)}.`,
      );
    }

    if (affirmCoverage >= this.passCoverage && affirmCoverage > negateCoverage) {
      // A negated passage on a side aspect ("keys are not shared") must not
      // spoil a pass; only an equally complete negated one makes it a conflict.
      if (negateCoverage >= this.passCoverage) {
        return result('unclear', 0.35, toEvidence([...affirming.slice(0, 2), ...negating.slice(0, 1)]), `Conflicting passages: some cover ${terms(affirmCoverage)}, others negate them.`);
      }
      return result('pass', 0.35 + 0.5 * affirmCoverage, toEvidence(affirming.slice(0, MAX_EVIDENCE)), `Passages cover ${terms(affirmCoverage)}, without negation (lexical match only).`);
    }
    if (negateCoverage >= this.failCoverage && negateCoverage >= affirmCoverage) {
      return result(
        'fail',
        0.45 + 0.35 * negateCoverage,
        toEvidence(negating.slice(0, MAX_EVIDENCE)),
        `The passages that mention the criterion negate it ("not", "no", "without"...); they cover ${terms(negateCoverage)}.`,
      );
    }
    return result(
      'unclear',
      0.2 + 0.2 * (affirmCoverage / this.passCoverage),
      toEvidence(affirming.slice(0, MAX_EVIDENCE)),
      `Passages cover only ${terms(affirmCoverage)}: related text, but not enough to decide.`,
    );
  }
}

/** The stemmed, distinct words of a criterion that carry its meaning. */
export function keyTermsOf(criterion: Pick<Criterion, 'name' | 'description'>): string[] {
  return [...new Set(tokenize(`${criterion.name} ${criterion.description}`))].filter((t) => !BOILERPLATE.has(t));
}

// 0.7 × the best passage + 0.3 × the union of the best three: one passage
// saying it all is the strong signal; the rest may add a missing term.
function coverageOf(candidates: readonly Candidate[], keyTerms: readonly string[]): number {
  if (candidates.length === 0) return 0;
  const best = candidates[0]!.coverage;
  const union = new Set(candidates.slice(0, MAX_EVIDENCE).flatMap((c) => c.hit.matched));
  return 0.7 * best + 0.3 * (union.size / keyTerms.length);
}

/**
 * Whether a negation cue sits within a few words of a matched term, in the same
 * clause (clauses end at , ; : and brackets, so "No incidents, data is
 * encrypted" is not negated).
 */
export function isNegated(text: string, matched: ReadonlySet<string>): boolean {
  for (const clause of text.split(/[,;:()[\]]|\s[-–—]\s|\bbut\b|\bhowever\b/i)) {
    const ws = words(clause);
    const cues: number[] = [];
    ws.forEach((w, i) => {
      if (NEGATION_CUES.has(w)) cues.push(i);
    });
    if (cues.length === 0) continue;
    for (let i = 0; i < ws.length; i++) {
      if (!matched.has(stem(ws[i]!))) continue;
      if (cues.some((c) => Math.abs(c - i) <= NEGATION_WINDOW)) return true;
    }
  }
  return false;
}

function toEvidence(candidates: readonly Candidate[]): Evidence[] {
  return candidates.map(({ hit }) => ({ document: hit.passage.document, page: hit.passage.page, quote: hit.passage.text }));
}

function clamp01(n: number): number {
  return Number.isFinite(n) ? Math.min(1, Math.max(0, n)) : 0;
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
