"""The org pages' routers, in one list for the app to include."""

from fastapi import APIRouter

from alumia.web import agents_pages, billing_pages, lab_pages

page_routers: list[APIRouter] = [lab_pages.router, agents_pages.router, billing_pages.router]
