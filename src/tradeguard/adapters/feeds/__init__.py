"""Candle feeds: live exchange data through ccxt, file replay and the market simulator."""
