"""A strict FHIRPath syntax check.

fhirpathpy's parser recovers from syntax errors and evaluates whatever it could read, so a typo in
an invariant, a search parameter or a policy expression would silently mean something else. This
parses with the same grammar and refuses any error, and any text left after the expression.
"""

from __future__ import annotations

from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

__all__ = ["FhirPathSyntaxError", "check_syntax"]


class FhirPathSyntaxError(ValueError):
    """Not FHIRPath; the message says where (no part of the expression is echoed)."""


class _Raise(ErrorListener):
    def syntaxError(
        self, recognizer: Any, symbol: Any, line: int, column: int, msg: str, e: Any
    ) -> None:
        raise FhirPathSyntaxError(f"not valid FHIRPath (at character {column + 1})")


def check_syntax(expression: str) -> None:
    """Raise ``FhirPathSyntaxError`` unless ``expression`` is FHIRPath, every character of it."""
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Raise())
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(_Raise())
    parser.expression()
    if parser.getCurrentToken().type != Token.EOF:
        raise FhirPathSyntaxError("not valid FHIRPath (text after the expression)")
