import { useEffect, useState } from 'preact/hooks';

type Theme = 'light' | 'dark';
const STORAGE = 'celerity-theme';

function initial(): Theme {
  const saved = localStorage.getItem(STORAGE);
  if (saved === 'light' || saved === 'dark') return saved;
  return matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

/** Follows the system's colour scheme until the user picks one, which is remembered. */
export function ThemeToggle() {
  const [theme, setTheme] = useState<Theme>(initial);
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
  }, [theme]);
  const flip = () => {
    const next = theme === 'dark' ? 'light' : 'dark';
    localStorage.setItem(STORAGE, next);
    setTheme(next);
  };
  return (
    <button type="button" class="secondary" aria-pressed={theme === 'dark'} onClick={flip}>
      Dark mode
    </button>
  );
}

// Before the first paint, so that the login page is in the chosen scheme too.
document.documentElement.dataset.theme = initial();
