"""Thin Typer command modules: parse options, call one domain function, print."""
