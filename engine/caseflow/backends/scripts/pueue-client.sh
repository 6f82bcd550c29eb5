#!/bin/sh
# pq ARG...: runs the pueue client of backend.pueue with ARGs. $pueue (the script's $1) is that
# client's command line with every word shell-quoted by caseflow (shlex.join of the words of
# backend.pueue: `pueue`, or `'pueue' '-c' '/etc/pueue.yml'`), so eval reads back exactly those
# words and nothing from a case: the ARGs stay words of their own ("$@").
# shellcheck disable=SC2154  # $pueue: set by the script that uses pq, from its $1
pq() {
  eval "$pueue" '"$@"'
}
