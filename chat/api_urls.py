from django.urls import path

from chat import api, search_api, transfer_api

urlpatterns = [
    path("models/", api.ModelsView.as_view(), name="models"),
    path("models/running/", api.RunningModelsView.as_view(), name="models_running"),
    path("models/load/", api.LoadModelView.as_view(), name="models_load"),
    path("models/pull/", api.PullModelView.as_view(), name="models_pull"),
    path("models/<path:name>/", api.DeleteModelView.as_view(), name="models_delete"),
    path("conversations/", api.ConversationListView.as_view(), name="conversations"),
    # Before conversations/<uuid:pk>/ (which a UUID alone matches, but keep the fixed names first).
    path(
        "conversations/export/",
        transfer_api.ConversationExportAllView.as_view(),
        name="conversations_export",
    ),
    path(
        "conversations/import/",
        transfer_api.ConversationImportView.as_view(),
        name="conversations_import",
    ),
    path(
        "conversations/<uuid:pk>/export/",
        transfer_api.ConversationExportView.as_view(),
        name="conversation_export",
    ),
    path(
        "conversations/<uuid:pk>/share/",
        transfer_api.ConversationShareView.as_view(),
        name="conversation_share",
    ),
    path("shares/", transfer_api.ShareListView.as_view(), name="shares"),
    path("shares/<int:link_id>/", transfer_api.ShareDetailView.as_view(), name="share"),
    path("conversations/<uuid:pk>/", api.ConversationDetailView.as_view(), name="conversation"),
    path(
        "conversations/<uuid:pk>/clear/",
        api.ConversationClearView.as_view(),
        name="conversation_clear",
    ),
    path(
        "conversations/<uuid:pk>/messages/",
        api.ConversationMessagesView.as_view(),
        name="conversation_messages",
    ),
    path(
        "conversations/<uuid:pk>/branch/",
        api.ConversationBranchView.as_view(),
        name="conversation_branch",
    ),
    path(
        "messages/<int:pk>/regenerate/",
        api.MessageActionView.as_view(kind="regenerate"),
        name="message_regenerate",
    ),
    path(
        "messages/<int:pk>/edit/", api.MessageActionView.as_view(kind="edit"), name="message_edit"
    ),
    path(
        "messages/<int:pk>/continue/",
        api.MessageActionView.as_view(kind="continue"),
        name="message_continue",
    ),
    path("usage/", api.UsageView.as_view(), name="usage"),
    path("search/", search_api.SearchView.as_view(), name="search"),
    path("chat/", api.ChatView.as_view(), name="chat"),
    path("chat/simple/", api.SimpleChatView.as_view(), name="chat_simple"),
    path("chat/stream/", api.StreamChatView.as_view(), name="chat_stream"),
]
