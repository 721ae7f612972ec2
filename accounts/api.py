from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt import serializers as jwt_serializers
from rest_framework_simplejwt import views as jwt_views
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import RefreshToken, UntypedToken

from accounts import selectors, services, tokens
from accounts.models import ApiKey
from accounts.throttling import LoginAccountThrottle, LoginIPThrottle

User = get_user_model()


class UserOutput(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "display_name", "is_staff", "date_joined"]
        read_only_fields = fields


@extend_schema_view(post=extend_schema(operation_id="obtain_token"))
class ThrottledTokenObtainPairView(jwt_views.TokenObtainPairView):
    """`{email, password}` -> `{access, refresh}`; unknown email and wrong password look alike."""

    throttle_classes = [LoginIPThrottle, LoginAccountThrottle]


class TokenRefreshInput(jwt_serializers.TokenRefreshSerializer):
    """SimpleJWT's refresh (rotation, the old token blacklisted), refusing a token whose account
    was deleted (SimpleJWT's answers 500), deactivated, or whose password changed since."""

    def validate(self, attrs):
        refresh = RefreshToken(attrs["refresh"])  # signature, expiry, blacklist
        tokens.user_of(refresh)  # TokenError: 401 token_not_valid (TokenViewBase)
        data = {"access": str(refresh.access_token)}
        if jwt_settings.ROTATE_REFRESH_TOKENS:
            if jwt_settings.BLACKLIST_AFTER_ROTATION:
                refresh.blacklist()
            refresh.set_jti()
            refresh.set_exp()
            refresh.set_iat()
            refresh.outstand()
            data["refresh"] = str(refresh)
        return data


class TokenRefreshView(jwt_views.TokenRefreshView):
    """`{refresh}` -> a new `{access, refresh}`; the old refresh token is blacklisted."""

    serializer_class = TokenRefreshInput


class TokenVerifyInput(jwt_serializers.TokenVerifySerializer):
    """A token is valid while its signature, expiry and blacklist say so *and* its account
    may still use it (SimpleJWT's verify looks at the token alone)."""

    def validate(self, attrs):
        token = UntypedToken(attrs["token"])
        jti = token.get(jwt_settings.JTI_CLAIM)
        if jti and BlacklistedToken.objects.filter(token__jti=jti).exists():
            raise TokenError("Token is blacklisted")
        tokens.user_of(token)
        return {}


class TokenVerifyView(jwt_views.TokenVerifyView):
    """`{token}` -> 200 while the token may be used, 401 `token_not_valid` otherwise."""

    serializer_class = TokenVerifyInput


class LogoutInput(serializers.Serializer):
    refresh = serializers.CharField()


class LogoutView(APIView):
    @extend_schema(request=LogoutInput, responses={204: None})
    def post(self, request):
        data = LogoutInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            token = RefreshToken(data.validated_data["refresh"])
        except TokenError as exc:
            raise serializers.ValidationError({"refresh": [str(exc)]}) from None
        if str(token.get(jwt_settings.USER_ID_CLAIM)) != str(request.user.pk):
            raise PermissionDenied("This refresh token belongs to another account.")
        token.blacklist()
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    @extend_schema(operation_id="get_current_user", responses=UserOutput)
    def get(self, request):
        return Response(UserOutput(request.user).data)


class RegisterInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(write_only=True, max_length=128)
    display_name = serializers.CharField(max_length=150, required=False, allow_blank=True)

    def validate(self, attrs):
        try:
            validate_password(attrs["password"], User(email=attrs["email"]))
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": list(exc.messages)}) from None
        return attrs


class RegisterView(APIView):
    permission_classes = [permissions.AllowAny]
    throttle_classes = [LoginIPThrottle]

    @extend_schema(request=RegisterInput, responses={201: UserOutput})
    def post(self, request):
        if not settings.REGISTRATION_ENABLED:
            raise NotFound("Registration is disabled on this server; ask an administrator.")
        data = RegisterInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            user = services.register_user(**data.validated_data)
        except services.EmailTaken:
            raise serializers.ValidationError(
                {"email": ["An account with this email address already exists."]}
            ) from None
        return Response(UserOutput(user).data, status=status.HTTP_201_CREATED)


# --------------------------------------------------------------------------- API keys


class ApiKeyOutput(serializers.ModelSerializer):
    prefix = serializers.CharField(
        read_only=True, help_text="The key's public part, `og_<key id>`: how to recognise it."
    )
    expired = serializers.SerializerMethodField(help_text="Whether `expires` has passed.")

    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "scope", "created", "last_used", "expires", "expired"]
        read_only_fields = fields
        extra_kwargs = {
            "last_used": {"help_text": "When it was last used (to the minute); null: never."},
            "expires": {"help_text": "When it stops working; null: never."},
        }

    def get_expired(self, key: ApiKey) -> bool:
        return key.is_expired()


class ApiKeyCreatedOutput(ApiKeyOutput):
    key = serializers.SerializerMethodField(
        help_text="The whole key, `og_<key id>_<secret>`: shown this once, never again."
    )

    class Meta(ApiKeyOutput.Meta):
        fields = [*ApiKeyOutput.Meta.fields, "key"]
        read_only_fields = fields

    def get_key(self, key: ApiKey) -> str:
        return self.context["key"]


class ApiKeyCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="What the key is for.")
    scope = serializers.ChoiceField(
        choices=ApiKey.Scope.choices,
        help_text="`chat`: chat and models (/api/chat/, conversations, /ollama/, /v1/, "
        "/ws/chat/) and everything read-only; `read`: read-only requests only.",
    )
    expires = serializers.DateTimeField(
        required=False, allow_null=True, help_text="When it stops working; null or absent: never."
    )

    def validate_expires(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("The expiry must be in the future.")
        return value


class ApiKeyListView(APIView):
    """Your API keys (never their secrets); create one (the key is in the answer, once).
    Keys themselves cannot manage keys: a JWT or the web session is needed."""

    @extend_schema(operation_id="list_api_keys", responses=ApiKeyOutput(many=True))
    def get(self, request):
        return Response(ApiKeyOutput(selectors.api_keys_of(request.user.pk), many=True).data)

    @extend_schema(
        operation_id="create_api_key",
        request=ApiKeyCreateInput,
        responses={201: ApiKeyCreatedOutput},
    )
    def post(self, request):
        data = ApiKeyCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        key, raw = services.create_api_key(request.user, **data.validated_data)
        return Response(
            ApiKeyCreatedOutput(key, context={"key": raw}).data, status=status.HTTP_201_CREATED
        )


class ApiKeyDetailView(APIView):
    @extend_schema(operation_id="revoke_api_key", responses={204: None})
    def delete(self, request, pk: int):
        """Revoke one of your keys: it stops working at once (404 for anyone else's)."""
        services.revoke_api_key(request.user, pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
